"""l3netctl wiring that needs no datastore: usage errors, command groups from other packages
(plain imports: a missing one fails the import of l3net.cli.ctl), and error formatting."""

from __future__ import annotations

import argparse
import types

import pytest

from l3net.cli import ctl
from l3net.cli.common import open_datastore
from l3net.errors import FieldError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv", [[], ["apply"], ["create"], ["replace"], ["delete"], ["get"], ["version"],
                                  ["ipam"], ["node"]])
def test_help_on_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        ctl.main([*argv, "--help"])
    assert ei.value.code == 0 and "usage: l3netctl" in capsys.readouterr().out


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        ctl.main(["get"])
    assert ei.value.code == 1
    assert ctl.main([]) == 1


def test_every_group_and_subcommand_module_is_installed() -> None:
    from l3net.cli import agent_main

    names = set(ctl.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"ipam", "node"} <= names
    names = set(agent_main.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert names == set(agent_main.SUBCOMMANDS)


def test_group_module_registers_and_gets_datastore_flags(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, object] = {}

    def add_parser(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser("ipam", help="IPAM")
        p.set_defaults(func=lambda args: seen.setdefault("keys", open_datastore(args)[1]) and 0)

    module = types.ModuleType("fake_ipam_cli")
    module.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setattr(ctl, "GROUPS", {"ipam": module})
    assert ctl.main(["--etcd-prefix", "/custom/", "ipam"]) == 0
    assert seen["keys"].prefix == "/custom/"  # type: ignore[attr-defined]


def test_bad_prefix_is_invalid_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["get", "ippools", "--etcd-prefix", "no-slash"]) == 1
    assert "--etcd-prefix" in capsys.readouterr().err


def test_bad_endpoint_scheme_is_invalid_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["get", "ippools", "--etcd-endpoints", "ftp://x"]) == 1
    assert "scheme" in capsys.readouterr().err


def test_unknown_kind_and_unreadable_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["get", "pods", "--etcd-endpoints", "http://127.0.0.1:9"]) == 1
    assert "unknown kind 'pods'" in capsys.readouterr().err
    assert ctl.main(["apply", "-f", "/nonexistent/file.yaml"]) == 1
    assert "cannot read /nonexistent/file.yaml" in capsys.readouterr().err


def test_error_format_skips_empty_parts() -> None:
    assert ctl.format_field_error(FieldError("", "invalid YAML at line 1, column 2: x", "f.yaml")) == \
        "f.yaml: invalid YAML at line 1, column 2: x"
    assert ctl.format_field_error(FieldError("spec.cidr", "bad", "f.yaml#1 IPPool/a")) == \
        "f.yaml#1 IPPool/a: spec.cidr: bad"
