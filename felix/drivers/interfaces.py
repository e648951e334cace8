"""felix.drivers.interfaces: host-side interface settings and the netlink link watcher.

:class:`InterfaceDriver` keeps the sysctls of workload interfaces and the node's
(:mod:`l3net.workload_kernel` lists them: the CNI plugin writes the same ones at ADD).
:class:`LinkWatcher` reports the node's links (name, index, up) from netlink, on its own
thread, as a full snapshot after every change, so that a workload route is programmed only once
its interface exists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from felix.desired import InterfaceSpec
from felix.links import Link
from l3net import metrics
from l3net.workload_kernel import NODE_SYSCTLS, interface_sysctls

_log = logging.getLogger(__name__)

IFF_UP = 0x1


class Sysctls(Protocol):
    """Read/write ``/proc/sys`` paths (slash form, e.g. ``net/ipv4/ip_forward``)."""

    def read(self, path: str) -> str | None:
        """The value, or None when the path does not exist."""
        ...

    def write(self, path: str, value: str) -> None: ...


class ProcSysctls:
    """:class:`Sysctls` on this thread's network namespace (the agent runs inside its node's)."""

    root = Path("/proc/sys")

    def read(self, path: str) -> str | None:
        try:
            return (self.root / path).read_text().strip()
        except FileNotFoundError:
            return None

    def write(self, path: str, value: str) -> None:
        (self.root / path).write_text(value)


class InterfaceDriver:
    """Owns the sysctls above. Runs on the kernel I/O thread; not thread-safe.

    Idempotent: each interface (by name and index, so a re-created interface is redone)
    is checked once and then cached; a second apply writes nothing. :meth:`invalidate`
    (periodic refresh) makes the next apply re-read and heal. An interface that vanishes
    mid-apply is skipped (its link event will remove it from the desired state); any
    other write error propagates.
    """

    def __init__(self, sysctls: Sysctls) -> None:
        self.sysctls = sysctls
        self._done: set[tuple[str, int]] = set()
        self._global_done = False
        # The interfaces and links of the last apply that configured every one of them: the same objects
        # again (a learned route's apply: the calculation kept its local part) need no pass over them.
        self._settled: tuple[object, object] | None = None

    def invalidate(self, reason: str) -> None:
        _log.debug("interface cache invalidated reason=%s", reason)
        self._done.clear()
        self._global_done = False
        self._settled = None

    def _ensure(self, path: str, value: str, required: bool) -> int:
        have = self.sysctls.read(path)
        if have is None:
            if required:
                raise FileNotFoundError(path)
            return 0
        if have == value:
            return 0
        _log.info("sysctl write path=%s old=%s new=%s", path, have, value)
        self.sysctls.write(path, value)
        metrics.SYSCTL_WRITES.inc()
        return 1

    def apply(self, interfaces: Iterable[InterfaceSpec], links: Mapping[str, Link]) -> int:
        settled = self._settled
        if settled is not None and settled[0] is interfaces and settled[1] is links and self._global_done:
            return 0
        self._settled = None
        writes = 0
        if not self._global_done:
            for path, value in NODE_SYSCTLS:
                writes += self._ensure(path, value, True)
            self._global_done = True
        wanted: set[tuple[str, int]] = set()
        fresh: list[tuple[str, int]] = []
        for spec in interfaces:
            link = links.get(spec.ifname)
            if link is None:
                continue
            ident = (spec.ifname, link.index)
            wanted.add(ident)
            if ident not in self._done:
                fresh.append(ident)
        # Only the new ones are sorted (writes in a stable order): sorting all of them was ~7 % of an agent's
        # GIL time at 500 pods, as every apply compared hundreds of dataclasses in Python.
        vanished = False
        for ident in sorted(fresh):
            try:
                for path, value, required in interface_sysctls(ident[0]):
                    writes += self._ensure(path, value, required)
            except FileNotFoundError:
                _log.info("interface vanished while configuring it ifname=%s", ident[0])
                vanished = True
                continue
            self._done.add(ident)
        self._done &= wanted
        if not vanished:
            self._settled = (interfaces, links)
        return writes


LinksCallback = Callable[[dict[str, Link]], None]


def _link_from_msg(msg: Any) -> Link | None:
    name = msg.get_attr("IFLA_IFNAME")
    if not name:
        return None
    return Link(name=name, index=msg["index"], up=bool(msg["flags"] & IFF_UP))


class LinkWatcher:
    """Watches netlink link events on its own daemon thread and reports full link snapshots.

    ``callback`` is called on the watcher thread (the agent hands it to its loop with
    ``call_soon_threadsafe``). If the netlink socket fails, the error is logged and
    ``on_error`` is called: the agent treats that as fatal (crash-only).
    """

    def __init__(self, callback: LinksCallback, *, netns: str | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.callback = callback
        self.netns = netns
        self.on_error = on_error
        self._stop = threading.Event()
        self._ipr: Any = None
        self._thread: threading.Thread | None = None
        self.links: dict[str, Link] = {}
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> dict[str, Link]:
        """Bind, dump the current links (returned), then watch; everything on the watcher thread,
        because pyroute2's sockets must be used on the thread that created them."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="l3net-links", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("link watcher did not start")
        if self._error is not None:
            raise self._error
        return dict(self.links)

    def _run(self, ready: threading.Event) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_LINK

        try:
            self._ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
            self._ipr.bind(groups=RTMGRP_LINK)  # bind before the dump: no event falls in between
            dump = IPRoute(netns=self.netns) if self.netns else IPRoute()
            try:
                for msg in dump.get_links():
                    link = _link_from_msg(msg)
                    if link is not None:
                        self.links[link.name] = link
            finally:
                dump.close()
        except Exception as exc:
            self._error = exc
            ready.set()
            return
        ready.set()
        try:
            while not self._stop.is_set():
                msgs = self._ipr.get()
                if not msgs:
                    break
                changed = False
                for msg in msgs:
                    changed |= self._handle(msg)
                if changed:
                    self.callback(dict(self.links))
        except Exception as exc:
            if self._stop.is_set():
                return
            _log.error("link watcher failed error=%s", exc)
            if self.on_error:
                self.on_error(exc)

    def _handle(self, msg: Any) -> bool:
        event = msg.get("event")
        link = _link_from_msg(msg)
        if link is None:
            return False
        if event == "RTM_DELLINK":
            if self.links.get(link.name, link).index == link.index:
                return self.links.pop(link.name, None) is not None
            return False
        if event == "RTM_NEWLINK":
            # A rename shows up as NEWLINK with the same index and a new name.
            for name, old in list(self.links.items()):
                if old.index == link.index and name != link.name:
                    del self.links[name]
            if self.links.get(link.name) == link:
                return False
            self.links[link.name] = link
            return True
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._ipr is not None:
            self._ipr.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
