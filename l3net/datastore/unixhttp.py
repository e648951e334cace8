"""l3net.datastore.unixhttp: a requests adapter that speaks HTTP over a unix socket.

The lab's etcd listens on a socket file in its run directory: a path is
reachable from every network namespace, a loopback address is not.
"""

from __future__ import annotations

import socket
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool

UNIX_SCHEME = "http+unix://"


def _connection_class(path: str) -> type[urllib3.connection.HTTPConnection]:
    class UnixConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if self.timeout is not None and isinstance(self.timeout, int | float):
                sock.settimeout(self.timeout)
            sock.connect(path)
            return sock

    return UnixConnection


class UnixSocketAdapter(requests.adapters.HTTPAdapter):
    """Sends every ``http+unix://`` request to one socket path."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        self._path = path
        self._pool: urllib3.connectionpool.HTTPConnectionPool | None = None
        super().__init__(**kwargs)

    def _unix_pool(self) -> urllib3.connectionpool.HTTPConnectionPool:
        if self._pool is None:
            pool = urllib3.connectionpool.HTTPConnectionPool("localhost", maxsize=8)
            pool.ConnectionCls = _connection_class(self._path)
            self._pool = pool
        return self._pool

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None, cert: Any = None):
        return self._unix_pool()

    def get_connection(self, url: Any, proxies: Any = None):  # requests < 2.32
        return self._unix_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        super().close()
