"""bgp.peer_status: one peer's session record in the speaker, and the ``node status`` row made from it."""

from __future__ import annotations

from dataclasses import dataclass

from bgp.events import GracefulRestartCap
from bgp.view import PeerSpec


@dataclass(frozen=True)
class PeerStatus:
    """One row of ``node status``."""

    name: str
    address: str
    peer_type: str
    state: str          # idle | connected | up | down
    since: float        # wall-clock time of the last state change
    info: str           # Established, Connect, Active, or the reason of the last down
    received: int
    advertised: int
    peer_as: int | None = None
    stale: int = 0      # received prefixes kept through the peer's graceful restart, not yet re-sent
    refused: int = 0    # received prefixes the import defaults refuse at present

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "peerType": self.peer_type, "state": self.state,
                "since": self.since, "info": self.info, "received": self.received, "advertised": self.advertised,
                "peerAS": self.peer_as, "stale": self.stale, "refused": self.refused}


@dataclass
class PeerRecord:
    """What the speaker knows of one configured peer's session."""

    spec: PeerSpec
    state: str = "idle"
    since: float = 0.0
    info: str = "Idle"
    eor: bool = False
    eor_seen: bool = False                       # End-of-RIB received at least once since the speaker started
    gr: GracefulRestartCap | None = None         # from the peer's last OPEN
