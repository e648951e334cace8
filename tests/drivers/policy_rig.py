"""The sync loop with every driver, the kernel faked: routes, interfaces, iptables and ipsets."""

from __future__ import annotations

from felix.dataplane import Dataplane
from felix.drivers.interfaces import InterfaceDriver
from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver
from felix.drivers.routes import RouteDriver
from felix.links import Link
from felix.loop import LoopConfig, SyncLoop
from felix.main import policy_builder
from tests.drivers.loop_builders import pooled_model
from tests.fakes.clock import FakeClock
from tests.fakes.iptables import FakeIptables
from tests.fakes.netlink import FakeNetlink
from tests.fakes.sysctls import FakeSysctls

REFRESH = 30.0


class PolicyRig:
    """A SyncLoop with every driver, the kernel faked: FakeNetlink, FakeSysctls, FakeIptables (iptables+ipset)."""

    def __init__(self, links: dict[str, int]) -> None:
        import asyncio
        import concurrent.futures

        self.asyncio = asyncio
        self.nl = FakeNetlink(links=links)
        self.sys = FakeSysctls()
        for name in links:
            self.sys.add_iface(name)
        self.kernel = FakeIptables()
        self.kernel.tables["filter"]["FORWARD"] = ["-s 198.51.100.0/24 -j DROP"]   # foreign
        self.kernel.ipsets["foreign-set"] = ("hash:ip", {"192.0.2.1"})
        self.clock = FakeClock()
        # refresh_interval=None, as the agent builds them: only the loop's refresh re-reads the kernel.
        self.iptables = IptablesDriver(self.kernel, backend="nft", refresh_interval=None, sleep=lambda _s: None)
        self.ipsets = IpsetDriver(self.kernel, refresh_interval=None)
        dp = Dataplane(RouteDriver(self.nl), InterfaceDriver(self.sys), ipsets=self.ipsets, iptables=self.iptables)
        self.io = concurrent.futures.ThreadPoolExecutor(1)
        self.sync = SyncLoop(pooled_model(), "n1", dp, config=LoopConfig(startup_sweep_delay=0,
                                                                       refresh_interval=REFRESH),
                             policy_builder=policy_builder(), io_executor=self.io, clock=self.clock,
                             rand=lambda: 0.5)
        self.sync.on_links({n: Link(n, i, True) for n, i in links.items()})

    def step(self, dt: float = 1.0) -> None:
        self.clock.now += dt

        async def once() -> None:
            await self.sync._maybe_apply(self.asyncio.get_running_loop())
        self.asyncio.run(once())

    def writes(self) -> int:
        return len(self.kernel.writes) + self.nl.writes
