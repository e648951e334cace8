"""The BGP fabric of the integration rung: router namespaces on one bridge, speakers on it, BIRD beside them.

``Fabric`` is a bridge namespace and one namespace per router (``ADDR``: nodes n1..n3,
reflectors rr1 and rr2, BIRD, FRR); the nodes carry their pod address (10.244.N.1) on
``lo``, and a tiny consumer installs each node's learned best routes in its kernel with
l3net's route protocol, so pings between pod addresses prove the routes both ways.
``Nodes`` runs l3net speakers for some nodes, ``bird`` a BIRD route reflector, and
``agent_crash``/``agent_start`` do to a node's BGP what a SIGKILL and a restart of its
agent do. The ``fabric`` fixture is module-scoped: every test module that imports it gets
a fabric of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from bgp.bird_control import BirdError, command
from bgp.speaker import Speaker
from bgp.view import build_node_view
from l3net import netns
from l3net.constants import ROUTE_PROTO
from l3net.model.resource import Resource
from tests.netns_fixtures import NetnsFactory

NET = "10.77.0"
ADDR = {"n1": f"{NET}.1", "n2": f"{NET}.2", "n3": f"{NET}.3", "rr1": f"{NET}.10", "rr2": f"{NET}.11",
        "bird": f"{NET}.20", "frr": f"{NET}.30"}
NODES = ("n1", "n2", "n3")
HOLD = 6


def block(name: str) -> str:
    return f"10.244.{name[1:]}.0/26"


def pod_ip(name: str) -> str:
    return f"10.244.{name[1:]}.1"


class Fabric:
    """Namespaces on one bridge, a kernel route consumer per node."""

    def __init__(self, factory: NetnsFactory) -> None:
        self.factory = factory
        self.ns: dict[str, str] = {}
        fab = factory("fab")
        netns.run(fab, ["ip", "link", "add", "br0", "type", "bridge"])
        netns.run(fab, ["ip", "link", "set", "br0", "up"])
        for name, addr in ADDR.items():
            ns = factory(name)
            self.ns[name] = ns
            factory.veth(ns, "eth0", fab, f"p{name}")
            netns.run(fab, ["ip", "link", "set", f"p{name}", "master", "br0"])
            netns.run(ns, ["ip", "addr", "add", f"{addr}/24", "dev", "eth0"])
            netns.write_sysctl("net.ipv4.ip_forward", 1, ns)
            if name in NODES:
                netns.run(ns, ["ip", "addr", "add", f"{pod_ip(name)}/32", "dev", "lo"])
        self._ipr: dict[str, IPRoute] = {}
        # pyroute2's sync API runs its own event loop: keep it on one thread of its own
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")

    def ipr(self, name: str) -> IPRoute:
        if name not in self._ipr:
            self._ipr[name] = IPRoute(netns=self.ns[name])
        return self._ipr[name]

    def kernel_routes(self, name: str) -> dict[str, list[str]]:
        """Our routes (proto 76) in ``name``'s kernel: {prefix: [gateways]}."""
        return self._pool.submit(self._kernel_routes, name).result()

    def _kernel_routes(self, name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in self.ipr(name).get_routes(family=2, proto=ROUTE_PROTO):
            dst = f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}"   # a default route has no RTA_DST
            gw = r.get_attr("RTA_GATEWAY")
            hops = [gw] if gw else sorted(h.get_attr("RTA_GATEWAY") for h in r.get_attr("RTA_MULTIPATH") or [])
            out[dst] = hops
        return out

    def installer(self, name: str) -> Callable[[dict[str, list[str]]], None]:
        """The route driver stand-in: make proto-76 routes equal to the learned best routes."""
        def apply(best: dict[str, list[str]]) -> None:
            self._pool.submit(_apply, best).result()

        def _apply(best: dict[str, list[str]]) -> None:
            ipr = self.ipr(name)
            have = self._kernel_routes(name)
            for dst in set(have) - set(best):
                ipr.route("del", dst=dst, proto=ROUTE_PROTO)
            for dst, hops in best.items():
                if have.get(dst) == sorted(hops):
                    continue
                if len(hops) == 1:
                    ipr.route("replace", dst=dst, gateway=hops[0], proto=ROUTE_PROTO)
                else:
                    ipr.route("replace", dst=dst, proto=ROUTE_PROTO, multipath=[{"gateway": h} for h in hops])
        return apply

    def ping(self, src: str, dst: str, count: int = 1, interval: float = 0.2) -> subprocess.CompletedProcess[str]:
        return netns.run(self.ns[src], ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                                        "-I", pod_ip(src), pod_ip(dst)], check=False, timeout=60)

    def close(self) -> None:
        for ipr in self._ipr.values():
            self._pool.submit(ipr.close).result()
        self._pool.shutdown()


@pytest.fixture(scope="module")
def fabric() -> Iterator[Fabric]:
    factory = NetnsFactory()
    try:
        fab = Fabric(factory)
        yield fab
        fab.close()
    finally:
        factory.cleanup()


def node_res(name: str, **bgp: object) -> Resource:
    labels = {"rr": "true"} if "routeReflectorClusterID" in bgp else {}
    return Resource("Node", name, {"bgp": {"ipv4Address": f"{ADDR[name]}/24", **bgp}}, labels=labels)


BASE_CFG = {"holdTime": f"{HOLD}s", "gracefulRestart": False}


class Nodes:
    """Speakers for some nodes, each feeding the fabric's kernel consumer."""

    def __init__(self, fabric: Fabric, run_dir: Path) -> None:
        self.fabric = fabric
        self.run_dir = run_dir
        self.sp: dict[str, Speaker] = {}

    async def start(self, names: tuple[str, ...], nodes: list[Resource], cfgs: list[Resource],
                    peers: list[Resource]) -> None:
        for name in names:
            s = Speaker(name, self.run_dir / name, netns=self.fabric.ns[name],
                        on_learned=self.fabric.installer(name), backoff=(0.3, 2.0))
            await s.start()
            view = build_node_view(name, nodes, cfgs, peers)
            assert view.errors == (), view.errors
            s.set_view(view)
            s.set_advertisements({block(name): None})
            self.sp[name] = s

    async def stop(self) -> None:
        for s in self.sp.values():
            await s.stop()
        for name in self.sp:
            self.fabric.installer(name)({})

    def learned_everything(self, names: tuple[str, ...] = NODES) -> bool:
        return all(set(self.fabric.kernel_routes(n)) >= {block(o) for o in names if o != n} for n in names)


def report(record_property: Callable[[str, object], None], key: str, seconds: float) -> None:
    record_property(key, round(seconds, 4))
    print(f"\nMEASURED {key}: {seconds * 1000:.1f} ms", file=sys.stderr)


BIRD_CONF = """
router id {rr};
log stderr all;
protocol device {{ }}
protocol direct {{ ipv4; interface "eth0"; }}
template bgp rrc {{
  local {rr} as 64512;
  rr client;
  rr cluster id {rr};
  passive on;
  hold time {hold};
  ipv4 {{ import all; export where source = RTS_BGP; }};
}}
{clients}
"""


@contextlib.contextmanager
def bird(fabric: Fabric, run_dir: Path, clients: tuple[str, ...], template: str = BIRD_CONF,
         **params: object) -> Iterator[Path]:
    """BIRD as route reflector for ``clients`` in the fabric's ``bird`` namespace; yields its control socket.

    ``template`` is formatted with ``rr``, ``hold``, ``clients`` and any extra ``params``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    conf, sock = run_dir / "bird.conf", run_dir / "bird.ctl"
    conf.write_text(template.format(rr=ADDR["bird"], hold=HOLD, clients="\n".join(
        f"protocol bgp {c} from rrc {{ neighbor {ADDR[c]} as 64512; }}" for c in clients), **params))
    proc = subprocess.Popen(netns.nsenter_cmd(fabric.ns["bird"], ["bird", "-f", "-c", str(conf), "-s", str(sock)]),
                            stdout=open(run_dir / "bird.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    fabric.factory.pids.append(proc.pid)
    try:
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def bird_established(sock: Path, name: str) -> bool:
    """Whether BIRD's protocol ``name`` is Established (False too while BIRD is not up yet)."""
    try:
        return "Established" in "\n".join(t for _, t in command(sock, f"show protocols {name}"))
    except BirdError:
        return False


async def agent_crash(nodes: Nodes, name: str) -> None:
    """SIGKILL the node's ExaBGP (what a SIGKILL of the agent does to it) and drop the speaker without a word."""
    sp = nodes.sp.pop(name)
    pid = sp.exabgp_pid
    assert pid
    os.killpg(pid, signal.SIGKILL)
    await sp.stop()   # only closes the socket: the process is gone, nothing is withdrawn


async def agent_start(nodes: Nodes, name: str, view_args: tuple[list[Resource], list[Resource], list[Resource]],
                      adverts: list[str]) -> Speaker:
    fab = nodes.fabric
    sp = Speaker(name, nodes.run_dir / name, netns=fab.ns[name], on_learned=fab.installer(name), backoff=(0.3, 2.0))
    await sp.start()
    sp.set_view(build_node_view(name, *view_args))
    sp.set_advertisements(dict.fromkeys(adverts))
    nodes.sp[name] = sp
    return sp
