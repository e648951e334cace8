"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

A candidate takes the Lease when it is free or its holder has not renewed it
within ``leaseDurationSeconds``, by an update carrying the resourceVersion it read
(two candidates racing: one gets 409 and stays a follower). The leader renews
every ``renew_interval``; if it cannot renew before the lease would expire it
steps down (``on_stop``) before anyone else may take over. Times are the
candidates' wall clocks, so clocks must agree to within the lease duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from l3net.kube.api import ApiError, ApiUnavailable, KubeAPI

_log = logging.getLogger(__name__)

__all__ = ["LeaderElector"]

_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse(ts: Any) -> float | None:
    if not isinstance(ts, str):
        return None
    for fmt in (_FMT, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(ts, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(_FMT)


class LeaderElector:
    """Owns this replica's claim on one Lease; runs on its own daemon thread.

    ``on_start()`` runs (on this thread) when leadership is gained and ``on_stop()``
    when it is lost or given up; ``is_leader`` may be read from any thread. API
    outages are retried, never raised.
    """

    def __init__(self, api: KubeAPI, namespace: str, name: str, identity: str, *, lease_duration: int = 15,
                 renew_interval: float = 5.0, retry_interval: float = 2.0,
                 on_start: Callable[[], None] = lambda: None, on_stop: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time):
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval
        self.retry_interval = retry_interval
        self.on_start, self.on_stop = on_start, on_stop
        self.clock = clock
        self.is_leader = False
        self.transitions = 0
        self._last_renew = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-elector", daemon=True)

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader gives the Lease up so a standby takes over at once."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self.is_leader and release:
            self._release()
        self._lose("stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                acquired = self._try_acquire_or_renew()
            except (ApiError, ApiUnavailable) as exc:
                _log.warning("lease %s/%s: cannot reach or update it: %s", self.namespace, self.name, exc)
                acquired = False
            now = self.clock()
            if acquired:
                self._last_renew = now
                if not self.is_leader:
                    self.is_leader = True
                    self.transitions += 1
                    _log.info("became leader lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
                    self.on_start()
            elif self.is_leader and now - self._last_renew >= self.lease_duration - self.renew_interval:
                # Step down while the lease still holds, so two leaders never overlap.
                self._lose("could not renew before expiry")
            self._stop.wait(self.renew_interval if self.is_leader else self.retry_interval)

    def _lose(self, why: str) -> None:
        if self.is_leader:
            self.is_leader = False
            _log.warning("lost leadership lease=%s/%s identity=%s why=%s", self.namespace, self.name,
                         self.identity, why)
            self.on_stop()

    def _spec(self, now: float, acquire: str | None, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration,
                "acquireTime": acquire or _stamp(now), "renewTime": _stamp(now), "leaseTransitions": transitions}

    def _try_acquire_or_renew(self) -> bool:
        now = self.clock()
        lease = self.api.get("Lease", self.name, self.namespace)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, None, 0)}
            try:
                self.api.create("Lease", body, self.namespace)
                return True
            except ApiError as exc:
                if exc.status == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
        mine = holder == self.identity
        if not mine and holder and renewed is not None and now < renewed + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(now, spec.get("acquireTime") if mine else None, transitions)
        try:
            self.api.replace("Lease", lease, self.namespace)
        except ApiError as exc:
            if exc.status == 409:
                return False  # someone else wrote it since our read
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.api.get("Lease", self.name, self.namespace)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["renewTime"] = _stamp(0)
                self.api.replace("Lease", lease, self.namespace)
        except (ApiError, ApiUnavailable) as exc:
            _log.warning("could not release lease %s/%s: %s (it expires on its own)", self.namespace, self.name, exc)
