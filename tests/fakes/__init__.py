"""Stateful fakes of the kernel and of time, shared by every rung that may not touch the real ones.

One module per faked thing: :mod:`.netlink` (the main routing table), :mod:`.sysctls` (/proc/sys),
:mod:`.iptables` (iptables-save/-restore and ipset save/restore), :mod:`.clock` (monotonic time).
The fakes keep state and the kernel's answers (errnos, atomicity), so tests assert end state rather
than call sequences; tests/netns/test_route_contract.py holds the netlink fake to the real kernel.
"""
