"""bgp.reflector: route reflection per RFC 4456, computed from the Adj-RIB-In.

ExaBGP never re-advertises what it receives, so a reflector node's speaker asks
``reflect()`` what to announce to each peer and diffs that like its own routes.
Pure and deterministic. Rules:

- only iBGP paths are reflected; the best path of each prefix is chosen
  (``Rib.best_paths`` order), and the Rib has already dropped paths whose
  CLUSTER_LIST holds our cluster ID or whose ORIGINATOR_ID is our router ID;
- a path from a client goes to every other client and to every non-client;
  a path from a non-client goes to clients only;
- never back to the peer it came from, nor to the peer whose address is its
  ORIGINATOR_ID (the originating client, also when it came via another reflector);
- ORIGINATOR_ID is set to the source's router ID when absent; our cluster ID is
  prepended to CLUSTER_LIST; next hop, LOCAL_PREF, MED, AS_PATH, origin and
  communities are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bgp.commands import Advertisement
from bgp.rib import Path, Rib
from bgp.view import PeerSpec

_log = logging.getLogger(__name__)


def reflected_advertisement(path: Path, cluster_id: str) -> Advertisement:
    a = path.attrs
    return Advertisement.of(a, path.next_hop, originator_id=a.originator_id or path.peer,
                            cluster_list=(cluster_id, *a.cluster_list))


def reflect(rib: Rib, peers: Iterable[PeerSpec], cluster_id: str,
            prefixes: Iterable[str] | None = None) -> dict[str, dict[str, Advertisement]]:
    """``{peer address: {prefix: Advertisement}}`` that this reflector must send.

    With ``prefixes``, only those prefixes are considered (the speaker recomputes what an
    update changed instead of the whole table); a prefix absent from a peer's map is not
    reflected to it.
    """
    peer_list = [p for p in peers if not p.ebgp]
    by_addr = {p.address: p for p in peer_list}
    out: dict[str, dict[str, Advertisement]] = {p.address: {} for p in peer_list}
    for prefix in sorted(rib.prefixes() if prefixes is None else prefixes):
        best = next((p for p in rib.best_paths(prefix) if not p.ebgp and p.peer in by_addr), None)
        if best is None:
            continue
        source = by_addr[best.peer]
        adv = reflected_advertisement(best, cluster_id)
        for target in peer_list:
            if target.address in (best.peer, adv.originator_id):
                continue
            if target.afi != source.afi:
                continue
            if source.rr_client or target.rr_client:
                out[target.address][prefix] = adv
    return out
