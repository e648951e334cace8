"""felix.endpointready: which local workloads the agent has programmed, for CNI ADDs that wait on it.

A new pod's packets are dropped until its node's agent has written the pod's
route and policy chains (fail closed). A CNI ADD served by the agent may
therefore wait, bounded by the netconf's ``policy_setup_timeout_seconds``, until
an apply has succeeded that was computed from a datastore revision at or after
the ADD's own WorkloadEndpoint write and that programmed the pod's interface.
Then the pod's first packet already meets its policy (Calico's CNI option of the
same name serves the same end). The revision matters: a pod re-created under
the same name has the same host interface name, and the old pod's programming
must not count for the new one.

The loop thread reports each successful apply; CNI worker threads wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class ProgrammedEndpoints:
    """The interfaces the last successful apply programmed, and the datastore revision it was computed from."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._revision = 0
        self._interfaces: frozenset[str] = frozenset()

    def applied(self, revision: int, interfaces: Iterable[str]) -> None:
        """An apply computed at ``revision`` succeeded and programmed ``interfaces`` (every local workload's)."""
        with self._cond:
            self._revision = max(self._revision, revision)
            self._interfaces = frozenset(interfaces)
            self._cond.notify_all()

    def is_programmed(self, interface: str, revision: int) -> bool:
        with self._cond:
            return self._programmed(interface, revision)

    def wait(self, interface: str, revision: int, timeout: float) -> bool:
        """Block until ``interface`` is programmed by an apply at ``revision`` or later; False after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self._programmed(interface, revision), timeout)

    def _programmed(self, interface: str, revision: int) -> bool:
        return self._revision >= revision and interface in self._interfaces
