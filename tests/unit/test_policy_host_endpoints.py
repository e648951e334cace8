"""Host endpoint policy (issue 19): the rendered chains, and the simulator against the reference evaluator.

The property test runs every kind of host endpoint policy (normal, applyOnForward, preDNAT,
doNotTrack) through the compiled program with :meth:`policy.simulator.SimNode.traverse` (raw,
mangle and filter in the kernel's order, marks and NOTRACK carried) and holds it to
:func:`policy.host_evaluator.host_flow_allowed`, Calico's rules written as plain code.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l3net.model import Resource
from policy.compiler import compile_policy
from policy.evaluator import Packet
from policy.host_endpoints import local_host_endpoints
from policy.host_evaluator import host_flow_allowed
from policy.simulator import SimNode, SimPacket
from tests.builders import gnp, hep, ns, wep
from tests.unit.policy_strategies import calico_rules, label_dicts

pytestmark = pytest.mark.unit

NODE_IP, EDGE_IP, POD_IP = "10.0.0.1", "10.0.3.1", "10.0.1.2"
FAILSAFE_IN, FAILSAFE_OUT = (("tcp", 22),), (("udp", 53),)
NAMESPACES = [ns("a")]


def program(heps: list[Resource], pols: list[Resource], pods: list[Resource] = ()) -> Any:
    return compile_policy(list(pods), [*pods, *heps], pols, NAMESPACES, host_endpoints=heps,
                          host_failsafe_in=FAILSAFE_IN, host_failsafe_out=FAILSAFE_OUT)


def rules_of(prog: Any, table: str, chain: str) -> list[str]:
    return [r.split('" ', 1)[1] for r in prog.chains[table][chain]]


EDGE = hep("n1-eth1", "n1", "eth1", {"role": "edge"}, [NODE_IP])


def test_no_host_endpoint_renders_exactly_what_it_did_before() -> None:
    pols = [gnp("deny", {"selector": "all()", "preDNAT": True, "applyOnForward": True,
                         "ingress": [{"action": "Deny"}]})]
    pod = wep("p", "a", "n1", POD_IP, {"app": "web"})
    with_heps, without = program([], pols, [pod]), compile_policy([pod], [pod], pols, NAMESPACES)
    assert with_heps == without
    assert set(with_heps.chains) == {"filter", "raw"} and "mangle" not in with_heps.hooks


def test_a_host_endpoint_is_default_deny_for_the_host_with_failsafe_ports_first() -> None:
    prog = program([EDGE], [])
    assert rules_of(prog, "filter", "l3n-INPUT")[-1] == "-i eth1 -g l3n-hi-eth1"
    assert rules_of(prog, "filter", "l3n-OUTPUT")[-1] == "-o eth1 -g l3n-ho-eth1"
    host_in = rules_of(prog, "filter", "l3n-hi-eth1")
    assert host_in[3] == "-p tcp -m multiport --dports 22 -j RETURN" and host_in[-1] == "-j DROP"
    assert rules_of(prog, "filter", "l3n-ho-eth1")[3] == "-p udp -m multiport --dports 53 -j RETURN"
    # No applyOnForward policy: forwarded traffic through eth1 passes untouched.
    assert not [r for r in rules_of(prog, "filter", "l3n-FORWARD") if "eth1" in r]
    assert "PREROUTING" not in prog.hooks["mangle"]  # nothing pre-DNAT
    # The host's DNAT'd traffic meets the egress chain in mangle POSTROUTING, on the interface it leaves by.
    assert rules_of(prog, "mangle", "l3n-POSTROUTING") == [
        "-m conntrack --ctstate DNAT -m addrtype --src-type LOCAL -o eth1 -g l3n-hmo-eth1"]
    assert rules_of(prog, "mangle", "l3n-hmo-eth1") == rules_of(prog, "filter", "l3n-ho-eth1")
    assert rules_of(prog, "raw", "l3n-OUTPUT") == ["-j MARK --set-xmark 0x0/0x40000"]  # clears the bit only
    assert "-m conntrack --ctstate DNAT -j RETURN" in rules_of(prog, "filter", "l3n-OUTPUT")


def test_pre_dnat_policy_is_in_mangle_prerouting_and_untracked_in_raw_both_ways() -> None:
    pols = [gnp("pre", {"selector": "role == 'edge'", "preDNAT": True, "applyOnForward": True,
                        "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}]}),
            gnp("fast", {"selector": "role == 'edge'", "doNotTrack": True, "applyOnForward": True,
                         "ingress": [{"action": "Allow", "protocol": "UDP"}],
                         "egress": [{"action": "Allow", "protocol": "UDP"}]})]
    prog = program([EDGE], pols)
    assert prog.hooks["mangle"]["PREROUTING"][0].endswith("-j l3n-PREROUTING")
    assert "-i eth1 -g l3n-hpi-eth1" in rules_of(prog, "mangle", "l3n-PREROUTING")
    assert any(r.startswith("-p tcp") and r.endswith("-j DROP") for r in rules_of(prog, "mangle", "l3n-gi-pre"))
    assert rules_of(prog, "raw", "l3n-untracked") == ["-j MARK --set-xmark 0x40000/0x40000", "-j CT --notrack"]
    assert "-i eth1 -g l3n-hri-eth1" in rules_of(prog, "raw", "l3n-PREROUTING")
    # Every packet enters through raw PREROUTING or raw OUTPUT: the host-accepted bit is cleared there first.
    assert rules_of(prog, "raw", "l3n-OUTPUT") == ["-j MARK --set-xmark 0x0/0x40000", "-o eth1 -g l3n-hro-eth1"]
    assert "-j MARK --set-xmark 0x0/0x40000" in rules_of(prog, "raw", "l3n-PREROUTING")
    # Untracked egress passes the failsafe services' replies (source port 22 here).
    assert "-p tcp -m multiport --sports 22 -j RETURN" in rules_of(prog, "raw", "l3n-hro-eth1")
    assert prog.hooks["raw"]["OUTPUT"][0].endswith("-j l3n-OUTPUT")
    # Failsafe before routing: only towards the host's own addresses.
    assert rules_of(prog, "mangle", "l3n-hpi-eth1")[0].startswith("-m addrtype --dst-type LOCAL -p tcp")
    # Neither policy is in the filter table: they police nothing there.
    assert "l3n-gi-pre" not in prog.chains["filter"] and "l3n-gi-fast" not in prog.chains["filter"]


def test_untracked_and_pre_dnat_policies_never_apply_to_workloads() -> None:
    pod = wep("p", "a", "n1", POD_IP, {"role": "edge"})
    pols = [gnp("pre", {"selector": "all()", "preDNAT": True, "applyOnForward": True,
                        "ingress": [{"action": "Deny"}]}),
            gnp("raw", {"selector": "all()", "doNotTrack": True, "applyOnForward": True,
                        "ingress": [{"action": "Deny"}]})]
    prog = program([], pols, [pod])
    assert not [r for rules in prog.chains["filter"].values() for r in rules if "l3n-gi-" in r]


def test_expected_ips_are_selector_members_and_one_interface_has_one_endpoint() -> None:
    pols = [gnp("from-edges", {"selector": "all()", "ingress": [{"action": "Allow",
                                                                  "source": {"selector": "role == 'edge'"}}]})]
    prog = program([EDGE], pols)
    members = {m for _, ms in prog.ipsets.values() for m in ms}
    assert members == {NODE_IP}
    twin = hep("z-eth1", "n1", "eth1", {"role": "other"})
    assert [h.name for h in local_host_endpoints([twin, EDGE])] == ["n1-eth1"]


# -- the property: simulator == reference evaluator ---------------------------------------------------------
@st.composite
def host_policies(draw) -> Resource:
    spec: dict[str, Any] = {"selector": draw(st.sampled_from(["all()", "role == 'web'", "has(app)", "!has(role)"]))}
    if draw(st.booleans()):
        spec["order"] = draw(st.sampled_from([10, 100, 2000]))
    kind = draw(st.sampled_from(["normal", "forward", "preDNAT", "doNotTrack"]))
    if kind != "normal":
        spec["applyOnForward"] = True
    if kind in ("preDNAT", "doNotTrack"):
        spec[kind] = True
    directions = ["ingress"] if kind == "preDNAT" else ["ingress", "egress"]
    for key in directions:
        if draw(st.booleans()):
            spec[key] = draw(st.lists(calico_rules(), max_size=3))
    if kind == "preDNAT":
        spec["types"] = ["Ingress"]
    elif draw(st.booleans()):
        spec["types"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    return gnp(f"h{draw(st.integers(0, 99))}", spec)


FLOWS = [  # (in, out, src, dst)
    ("eth1", None, "10.0.9.9", NODE_IP), ("eth1", None, EDGE_IP, NODE_IP), ("eth2", None, "192.168.7.7", EDGE_IP),
    (None, "eth1", NODE_IP, "10.0.9.9"), (None, "eth2", EDGE_IP, "10.0.1.9"),
    ("eth1", "eth2", "10.0.9.9", "192.168.7.7"), ("eth2", "eth1", "192.168.7.7", "10.0.0.9"),
    ("eth1", "caliw0", "10.0.9.9", POD_IP), ("caliw0", "eth1", POD_IP, "10.0.9.9"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_dicts(), label_dicts(), label_dicts(),
       st.lists(host_policies(), min_size=1, max_size=4, unique_by=lambda p: p.name), st.data())
def test_host_endpoint_programs_agree_with_the_reference_evaluator(l1, l2, lpod, pols, data) -> None:
    heps = [hep("n1-eth1", "n1", "eth1", l1, [NODE_IP]), hep("n1-eth2", "n1", "eth2", l2, [EDGE_IP])]
    pod = wep("w0", "a", "n1", POD_IP, lpod)
    pod = Resource(pod.kind, pod.name, {**pod.spec, "interfaceName": "caliw0"}, namespace=pod.namespace,
                   labels=pod.labels)
    prog = compile_policy([pod], [pod, *heps], pols, NAMESPACES, host_endpoints=heps,
                          host_failsafe_in=FAILSAFE_IN, host_failsafe_out=FAILSAFE_OUT)
    sim = SimNode(prog, {POD_IP: "caliw0"}, local_addresses=(NODE_IP, EDGE_IP))
    for _ in range(10):
        in_if, out_if, src, dst = data.draw(st.sampled_from(FLOWS))
        proto = data.draw(st.sampled_from(["TCP", "UDP", "ICMP"]))
        if proto == "ICMP":
            pkt = Packet(src, dst, proto, icmp_type=data.draw(st.sampled_from([0, 8])), icmp_code=0)
        else:
            pkt = Packet(src, dst, proto, data.draw(st.sampled_from([22, 53, 80, 8080])),
                         src_port=data.draw(st.sampled_from([22, 53, 80, 40000])))
        expected = host_flow_allowed(pols, NAMESPACES, [pod, *heps], heps, pkt, in_iface=in_if, out_iface=out_if,
                                     failsafe_in=FAILSAFE_IN, failsafe_out=FAILSAFE_OUT)
        # A mark the packet arrives with (a tunnel's, another tool's) must not count as l3net's own Allow.
        mark = data.draw(st.sampled_from([0, 0x40000, 0x70000]))
        got = sim.traverse(SimPacket(src, dst, proto.lower(), pkt.dst_port, in_if, out_if, mark=mark,
                                     sport=pkt.src_port, icmp_type=pkt.icmp_type, icmp_code=pkt.icmp_code))
        assert got is expected, (in_if, out_if, pkt)


def _both(pols: list[Resource], heps: list[Resource], pkt: Packet, in_if: str | None, out_if: str | None,
          mark: int = 0, ctstate: str = "NEW") -> tuple[bool, bool]:
    """(simulator, reference evaluator) for one packet (the evaluator judges first packets only)."""
    prog = program(heps, pols)
    sim = SimNode(prog, {}, local_addresses=(NODE_IP, EDGE_IP))
    got = sim.traverse(SimPacket(pkt.src, pkt.dst, pkt.protocol.lower(), pkt.dst_port, in_if, out_if, ctstate,
                                 mark=mark, sport=pkt.src_port))
    expected = host_flow_allowed(pols, NAMESPACES, heps, heps, pkt, in_iface=in_if, out_iface=out_if,
                                 failsafe_in=FAILSAFE_IN, failsafe_out=FAILSAFE_OUT)
    return got, expected


def test_a_pre_dnat_allow_still_meets_the_forward_egress_policy_of_the_interface_it_leaves_by() -> None:
    heps = [EDGE, hep("n1-eth2", "n1", "eth2", {"role": "core"}, [EDGE_IP])]
    pols = [gnp("in", {"selector": "role == 'edge'", "preDNAT": True, "applyOnForward": True,
                       "ingress": [{"action": "Allow"}]}),
            gnp("out", {"selector": "role == 'core'", "applyOnForward": True, "egress": [{"action": "Deny"}]})]
    pkt = Packet("10.0.9.9", "192.168.7.7", "TCP", 80, src_port=40000)
    assert _both(pols, heps, pkt, "eth1", "eth2") == (False, False)
    # ... while it does skip the forward ingress policy of the interface it came in by.
    pols[1] = gnp("out", {"selector": "role == 'edge'", "applyOnForward": True, "ingress": [{"action": "Deny"}]})
    assert _both(pols, heps, pkt, "eth1", "eth2") == (True, True)


def test_untracked_policy_passes_failsafe_replies_and_ignores_a_mark_the_packet_arrives_with() -> None:
    deny_in = [gnp("raw-in", {"selector": "role == 'edge'", "doNotTrack": True, "applyOnForward": True,
                              "ingress": [{"action": "Deny"}]})]
    # A reply to the host's own DNS query (failsafe outbound udp:53): conntrack would pass it in filter, but
    # untracked policy runs before conntrack, so the raw table must pass it by its source port.
    dns_reply = Packet("10.0.9.9", NODE_IP, "UDP", 40000, src_port=53)
    assert _both(deny_in, [EDGE], dns_reply, "eth1", None, ctstate="ESTABLISHED")[0] is True
    other = Packet("10.0.9.9", NODE_IP, "UDP", 40000, src_port=80)
    assert _both(deny_in, [EDGE], other, "eth1", None) == (False, False)
    # With no policy the host endpoint is default deny; a packet arriving marked host-accepted is no exception.
    assert _both([], [EDGE], other, "eth1", None, mark=0x40000) == (False, False)
