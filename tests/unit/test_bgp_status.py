"""bgp.status and bgp.commands: stored peer table format, the table text, ExaBGP API lines."""

from __future__ import annotations

import argparse

import pytest

from bgp import status
from bgp.commands import Advertisement, announce_command, withdraw_command
from bgp.peer_status import PeerStatus
from bgp.status_cli import add_parser

pytestmark = pytest.mark.unit

ROWS = [PeerStatus("Mesh_10_0_0_2", "10.0.0.2", "node-to-node mesh", "up", 1000.0, "Established", 3, 1, 64512),
        PeerStatus("Global_fd00__9", "fd00::9", "global", "down", 0.0, "Active", 0, 0, 65000)]


def test_round_trip_and_bad_values() -> None:
    st = status.decode(status.encode("n1", ROWS, as_number=64512, router_id="10.0.0.1", now=5.0))
    assert st == status.NodeStatus("n1", 5.0, 64512, "10.0.0.1", tuple(ROWS))
    for bad in (b"{", b"[]", b'{"node": "n1"}', b'{"node": "n1", "peers": [1]}'):
        with pytest.raises(ValueError):
            status.decode(bad)


def test_table_has_calico_columns_per_family() -> None:
    text = status.format_table(status.NodeStatus("n1", 5.0, 64512, "10.0.0.1", tuple(ROWS)), now=1001.0)
    lines = text.splitlines()
    assert "IPv4 BGP status" in lines and "IPv6 BGP status" in lines
    header = next(line for line in lines if "PEER ADDRESS" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO", "RECEIVED", "ADVERTISED"]
    row = next(line for line in lines if "10.0.0.2" in line)
    assert [c.strip() for c in row.strip("|").split("|")][1:3] == ["node-to-node mesh", "up"]
    assert [c.strip() for c in row.strip("|").split("|")][4:] == ["Established", "3", "1"]


def test_node_status_parser_registers() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["node", "status", "n7"])
    assert args.node == "n7" and callable(args.func)


def test_commands() -> None:
    adv = Advertisement(next_hop="10.0.0.1", local_pref=200, communities=("64512:1",), originator_id="10.0.0.1",
                        cluster_list=("1.1.1.1",), as_path=(65001,), med=7)
    assert announce_command("10.0.0.2", "10.244.1.0/26", adv) == (
        "neighbor 10.0.0.2 announce route 10.244.1.0/26 next-hop 10.0.0.1 origin igp as-path [ 65001 ] med 7 "
        "local-preference 200 community [ 64512:1 ] originator-id 10.0.0.1 cluster-list [ 1.1.1.1 ]")
    assert announce_command("10.0.0.9", "10.244.1.0/26", adv, ibgp=False).endswith("med 7 community [ 64512:1 ]")
    assert announce_command("10.0.0.2", "10.244.1.0/26", Advertisement()) == (
        "neighbor 10.0.0.2 announce route 10.244.1.0/26 next-hop self origin igp")
    assert withdraw_command("10.0.0.2", "10.244.1.0/26") == "neighbor 10.0.0.2 withdraw route 10.244.1.0/26"
    with pytest.raises(ValueError):
        withdraw_command("10.0.0.2", "10.244.1.1/26")
