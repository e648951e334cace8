"""tests.fakes.netlink: a stateful fake of the kernel's main routing table behind felix's RouteNetlink seam.

Its semantics are checked against the real kernel by tests/netns/test_route_contract.py.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterable, Sequence

from felix.drivers.routes import SCOPE_UNIVERSE, KernelRoute


class FakeNetlink:
    """A main routing table with the kernel's replace/delete semantics, counting writes.

    ``replace`` overwrites whatever holds the slot (dst, metric), foreign or not, exactly
    like the kernel: a driver that replaces a foreign route is caught by the end state;
    ``create`` fails with EEXIST when the slot is held.
    ``fail_writes`` makes the next N writes raise; ``fail_dsts`` makes every write of
    those destinations fail with a transient error (EIO); ``refuse`` maps destinations
    to the errno with which the kernel refuses every write of them (ENETUNREACH for an
    unreachable next hop ...). ``write_batch`` has the kernel's batch semantics: each op
    is atomic, a failed op does not stop the others. ``dumps`` counts full-table dumps,
    ``oif_dumps`` the dumps filtered by interface. Like the kernel, it keeps an IPv6 route's scope
    as universe whatever was written, and, given the links' ``connected`` subnets, refuses a next
    hop on none of them. Where it is knowingly simpler than the kernel (a gateway route's output
    interface is not filled in) is stated in tests/netns/test_route_contract.py, which runs the
    same scenarios against both.
    """

    def __init__(self, links: dict[str, int] | None = None, connected: Iterable[str] | None = None) -> None:
        self.table: dict[tuple[str, int], KernelRoute] = {}
        self.links = dict(links or {})
        # The links' subnets: with them, a next hop outside all of them is refused as by the kernel;
        # without (None), next hops are not checked.
        self.connected = None if connected is None else [ipaddress.ip_network(c, strict=False) for c in connected]
        self.writes = 0
        self.dumps = 0
        self.fail_writes = 0
        self.fail_dsts: set[str] = set()
        self.refuse: dict[str, int] = {}
        self.oif_dumps = 0
        self.batches: list[int] = []

    def add(self, route: KernelRoute) -> None:
        """Someone else (or a previous agent) puts a route in the table."""
        self.table[route.slot] = route

    def dump_routes(self, oif: int | None = None) -> list[KernelRoute]:
        if oif is not None:
            self.oif_dumps += 1
            return [r for r in self.table.values() if r.oif == oif]
        self.dumps += 1
        return list(self.table.values())

    def link_index(self, ifname: str) -> int | None:
        return self.links.get(ifname)

    def _maybe_fail(self, route: KernelRoute | None = None) -> None:
        if route is not None and route.dst in self.refuse:
            code = self.refuse[route.dst]
            raise OSError(code, f"{os.strerror(code)} (injected refusal of {route.dst})")
        if route is not None and route.dst in self.fail_dsts:
            raise OSError(errno.EIO, f"injected failure of {route.dst}")
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError("injected netlink failure")

    def replace(self, route: KernelRoute) -> None:
        self._maybe_fail(route)
        if route.oif is not None and route.oif not in self.links.values():
            raise OSError(errno.ENODEV, "No such device")
        self._check_next_hops(route)
        self.writes += 1
        if ":" in route.dst and route.scope != SCOPE_UNIVERSE:
            # IPv6 has no route scopes: the kernel keeps and dumps every IPv6 route as universe.
            route = route._replace(scope=SCOPE_UNIVERSE)
        self.table[route.slot] = route

    def _check_next_hops(self, route: KernelRoute) -> None:
        """The kernel refuses a route if any next hop is on none of the links (IPv4 ENETUNREACH, IPv6 EHOSTUNREACH)."""
        if self.connected is None:
            return
        for gw in route.gateways:
            addr = ipaddress.ip_address(gw)
            if not any(addr in net for net in self.connected if net.version == addr.version):
                code = errno.ENETUNREACH if addr.version == 4 else errno.EHOSTUNREACH
                raise OSError(code, f"{os.strerror(code)} (next hop {gw} is on no link)")

    def create(self, route: KernelRoute) -> None:
        """Create-exclusive (NLM_F_CREATE|NLM_F_EXCL): EEXIST when any route holds the slot."""
        self._maybe_fail(route)
        if route.slot in self.table:
            raise OSError(errno.EEXIST, "File exists")
        self.replace(route)

    def delete(self, route: KernelRoute) -> None:
        self._maybe_fail(route)
        have = self.table.get(route.slot)
        if have is None or have.proto != route.proto:
            raise OSError(errno.ESRCH, "ESRCH: no such route")
        self.writes += 1
        del self.table[route.slot]

    def write_batch(self, ops: Sequence[tuple[str, KernelRoute]]) -> list[OSError | None]:
        self.batches.append(len(ops))
        out: list[OSError | None] = []
        for op, route in ops:
            try:
                {"replace": self.replace, "create": self.create, "delete": self.delete}[op](route)
            except OSError as exc:
                out.append(exc)
            else:
                out.append(None)
        return out

    def by_proto(self, proto: int) -> dict[tuple[str, int], KernelRoute]:
        return {k: r for k, r in self.table.items() if r.proto == proto}
