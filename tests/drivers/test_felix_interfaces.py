"""The interface driver against a fake /proc/sys."""

from __future__ import annotations

import pytest

from felix.desired import InterfaceSpec
from felix.drivers.interfaces import InterfaceDriver
from felix.links import Link
from tests.fakes.sysctls import FakeSysctls

pytestmark = pytest.mark.drivers


def test_settings_applied_once_and_healed_on_refresh() -> None:
    sysctls = FakeSysctls()
    sysctls.add_iface("cali1")
    sysctls.add_iface("cali2", ipv6=False)
    sysctls.add_iface("eth0")
    drv = InterfaceDriver(sysctls)
    links = {"cali1": Link("cali1", 5, True), "cali2": Link("cali2", 6, True), "eth0": Link("eth0", 2, True)}
    want = [InterfaceSpec("cali1"), InterfaceSpec("cali2")]
    assert drv.apply(want, links) == 7  # ip_forward + 4 + 2 (no IPv6 on cali2)
    assert sysctls.values["net/ipv4/conf/eth0/proxy_arp"] == "0"
    assert sysctls.values["net/ipv6/conf/cali1/disable_ipv6"] == "1"  # IPv6 is not policed: off on workloads
    assert sysctls.values["net/ipv6/conf/eth0/disable_ipv6"] == "0"   # never on the node's own interfaces
    assert drv.apply(want, links) == 0 and sysctls.writes == 7
    sysctls.values["net/ipv4/conf/cali1/proxy_arp"] = "0"  # clobbered
    assert drv.apply(want, links) == 0  # cached until refresh
    drv.invalidate("refresh")
    assert drv.apply(want, links) == 1
    assert sysctls.values["net/ipv4/conf/cali1/proxy_arp"] == "1"


def test_recreated_interface_is_configured_again_and_vanished_one_skipped() -> None:
    sysctls = FakeSysctls()
    sysctls.add_iface("cali1")
    drv = InterfaceDriver(sysctls)
    drv.apply([InterfaceSpec("cali1")], {"cali1": Link("cali1", 5, True)})
    sysctls.remove_iface("cali1")
    # Link snapshot is older than the kernel: the interface is already gone. Skipped, not fatal.
    assert drv.apply([InterfaceSpec("cali1")], {"cali1": Link("cali1", 9, True)}) == 0
    sysctls.add_iface("cali1")
    assert drv.apply([InterfaceSpec("cali1")], {"cali1": Link("cali1", 9, True)}) == 4


class _CountingSysctls(FakeSysctls):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, path: str) -> str | None:
        self.reads += 1
        return super().read(path)


def test_the_same_interfaces_and_links_again_cost_no_pass_until_a_refresh_or_a_vanished_interface() -> None:
    """An apply with the very objects of the last complete one (a learned route's apply) reads nothing; a
    refresh, new objects, or an interface that vanished mid-way make the next apply look again."""
    sysctls = _CountingSysctls()
    sysctls.add_iface("cali1")
    drv = InterfaceDriver(sysctls)
    want, links = frozenset({InterfaceSpec("cali1")}), {"cali1": Link("cali1", 5, True)}
    assert drv.apply(want, links) == 5
    reads = sysctls.reads
    assert drv.apply(want, links) == 0 and sysctls.reads == reads
    sysctls.values["net/ipv4/conf/cali1/proxy_arp"] = "0"
    drv.invalidate("refresh")
    assert drv.apply(want, links) == 1
    both = frozenset({InterfaceSpec("cali1"), InterfaceSpec("cali2")})
    links2 = {**links, "cali2": Link("cali2", 6, True)}
    assert drv.apply(both, links2) == 0   # cali2 has no sysctls yet: vanished mid-way, so not settled
    sysctls.add_iface("cali2")
    assert drv.apply(both, links2) == 4   # the same objects, looked at again
    reads = sysctls.reads
    assert drv.apply(both, links2) == 0 and sysctls.reads == reads
