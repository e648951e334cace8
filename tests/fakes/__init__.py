"""Stateful fakes of the kernel, of time and of ExaBGP, shared by every rung that may not touch the real ones.

One module per faked thing: :mod:`.netlink` (the main routing table), :mod:`.sysctls` (/proc/sys),
:mod:`.iptables` (iptables-save/-restore and ipset save/restore), :mod:`.clock` (monotonic time),
:mod:`.exabgp` (the JSON lines ExaBGP 5.0.15 prints on its API: state, OPEN, UPDATE, End-of-RIB, ...).
The fakes keep state and the kernel's answers (errnos, atomicity), so tests assert end state rather
than call sequences; tests/netns/test_route_contract.py holds the netlink fake to the real kernel and
tests/unit/test_fake_exabgp.py holds the ExaBGP fake to l3net's parser and to ExaBGP's own JSON encoder.
"""
