"""felix.endpointready: a CNI ADD's wait is satisfied only by an apply that saw its endpoint and programmed it."""

from __future__ import annotations

import threading
import time

import pytest

from felix.endpointready import ProgrammedEndpoints

pytestmark = pytest.mark.unit


def test_programmed_only_at_or_after_the_endpoint_revision() -> None:
    p = ProgrammedEndpoints()
    p.applied(10, ["calia"])
    assert p.is_programmed("calia", 10)
    assert p.is_programmed("calia", 9)
    # The endpoint was (re)written at revision 11: an apply computed at 10 programmed the old pod, not this one.
    assert not p.is_programmed("calia", 11)
    assert not p.is_programmed("calib", 10)


def test_an_interface_gone_from_the_apply_is_no_longer_programmed() -> None:
    p = ProgrammedEndpoints()
    p.applied(5, ["calia", "calib"])
    p.applied(6, ["calib"])
    assert not p.is_programmed("calia", 5)
    assert p.is_programmed("calib", 6)


def test_revision_never_goes_backwards() -> None:
    p = ProgrammedEndpoints()
    p.applied(8, ["calia"])
    p.applied(7, ["calia"])
    assert p.is_programmed("calia", 8)


def test_wait_wakes_when_a_later_apply_programs_the_interface() -> None:
    p = ProgrammedEndpoints()
    p.applied(3, [])
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(p.wait("calia", 4, 30.0)))
    waiter.start()
    p.applied(3, ["calia"])  # too old: the waiter keeps waiting
    time.sleep(0.05)
    assert waiter.is_alive()
    p.applied(4, ["calia"])
    waiter.join(10)
    assert result == [True]


def test_wait_times_out_with_false() -> None:
    p = ProgrammedEndpoints()
    p.applied(1, ["calib"])
    assert p.wait("calia", 1, 0.05) is False
