"""Stateful fakes of the kernel for felix's driver tests: a routing table and /proc/sys."""

from __future__ import annotations

from felix.drivers.routes import KernelRoute


class FakeNetlink:
    """A main routing table with the kernel's replace/delete semantics, counting writes.

    ``replace`` overwrites whatever holds the slot (dst, metric), foreign or not, exactly
    like the kernel: a driver that replaces a foreign route is caught by the end state.
    ``fail_writes`` makes the next N writes raise.
    """

    def __init__(self, links: dict[str, int] | None = None) -> None:
        self.table: dict[tuple[str, int], KernelRoute] = {}
        self.links = dict(links or {})
        self.writes = 0
        self.dumps = 0
        self.fail_writes = 0

    def add(self, route: KernelRoute) -> None:
        """Someone else (or a previous agent) puts a route in the table."""
        self.table[route.slot] = route

    def dump_routes(self) -> list[KernelRoute]:
        self.dumps += 1
        return list(self.table.values())

    def link_index(self, ifname: str) -> int | None:
        return self.links.get(ifname)

    def _maybe_fail(self) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError("injected netlink failure")

    def replace(self, route: KernelRoute) -> None:
        self._maybe_fail()
        if route.oif is not None and route.oif not in self.links.values():
            raise OSError("ENODEV")
        self.writes += 1
        self.table[route.slot] = route

    def delete(self, route: KernelRoute) -> None:
        self._maybe_fail()
        have = self.table.get(route.slot)
        if have is None or have.proto != route.proto:
            raise OSError("ESRCH: no such route")
        self.writes += 1
        del self.table[route.slot]

    def by_proto(self, proto: int) -> dict[tuple[str, int], KernelRoute]:
        return {k: r for k, r in self.table.items() if r.proto == proto}


class FakeSysctls:
    """/proc/sys as a dict; an interface's entries exist once ``add_iface`` was called."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {"net/ipv4/ip_forward": "0"}
        self.writes = 0

    def add_iface(self, name: str, ipv6: bool = True) -> None:
        self.values[f"net/ipv4/conf/{name}/proxy_arp"] = "0"
        self.values[f"net/ipv4/neigh/{name}/proxy_delay"] = "80"
        if ipv6:
            self.values[f"net/ipv6/conf/{name}/accept_ra"] = "1"

    def remove_iface(self, name: str) -> None:
        for k in [k for k in self.values if f"/{name}/" in k]:
            del self.values[k]

    def read(self, path: str) -> str | None:
        return self.values.get(path)

    def write(self, path: str, value: str) -> None:
        if path not in self.values:
            raise FileNotFoundError(path)
        self.writes += 1
        self.values[path] = value
