"""tests.fakes.sysctls: a stateful fake of /proc/sys behind felix's Sysctls seam."""

from __future__ import annotations


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
            self.values[f"net/ipv6/conf/{name}/disable_ipv6"] = "0"

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
