"""l3net.netns.create: a named namespace made in-process (unshare + bind mount on a thread), laid out as by
`ip netns add`."""

from __future__ import annotations

import os
import subprocess

import pytest

from l3net import netns

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


def test_create_makes_a_named_namespace_with_lo_up_and_leaves_the_caller_where_it_was(netns_factory) -> None:
    own = os.readlink("/proc/thread-self/ns/net")
    name = netns_factory("mk")  # netns.create under the fixture's cleanup
    assert netns._netns_dir_mounted(), "the in-process path ran (/run/netns is iproute2's mount point)"
    assert os.readlink("/proc/thread-self/ns/net") == own
    assert os.readlink(f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net") == own  # the main thread too
    assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    link = subprocess.run(["ip", "-n", name, "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert len(link.splitlines()) == 1 and ": lo:" in link and ",UP," in link, link  # only lo, and it is up
    ping = subprocess.run(["ip", "netns", "exec", name, "ping", "-c", "1", "-W", "2", "127.0.0.1"],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout
    with netns.in_netns(name):
        assert os.readlink("/proc/thread-self/ns/net") != own
    with pytest.raises(FileExistsError):
        netns.create(name)
    assert netns.exists(name) and subprocess.run(["ip", "-n", name, "link", "show", "lo"]).returncode == 0
    netns.delete(name)
    assert not netns.exists(name)
