"""bgp.peer_checks: every reason a BGPPeer cannot be right, and its password as the agent reads it.

Pure: ``check_bgp_peer`` names each refused field by running the model's BGPPeer check (the
view refuses the peer as a whole); ``resolve_password`` reads a checked
``password``/``nodeMeshPassword`` value without ever quoting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgp.secrets import SecretReader
from l3net.errors import FieldError
from l3net.model.validate.bgp import BGP_PEER_SPEC
from l3net.model.validate.checker import Checker


def resolve_password(pw: Any, secrets: SecretReader | None) -> str | None:
    """The password text of a checked ``password`` value; ValueError (without the value) when unavailable."""
    if not pw:
        return None
    if "value" in pw:
        return str(pw["value"])
    if secrets is None:
        raise ValueError("secretKeyRef given but no secrets directory is configured (bgp_secrets_dir)")
    return secrets.read(pw["secretKeyRef"]["name"], pw["secretKeyRef"]["key"])


def check_bgp_peer(spec: Any, document: str = "") -> list[FieldError]:
    """Every reason a BGPPeer spec cannot be right (empty when it is fine).

    The model's own BGPPeer check, not a second copy of it: the agent refuses exactly what
    ``l3netctl`` refuses, at the same paths, with the same reasons.
    """
    if not isinstance(spec, Mapping):
        return [FieldError(path="spec", reason="must be a mapping", document=document)]
    checker = Checker(document)
    BGP_PEER_SPEC(checker, dict(spec), "spec")
    return checker.errors
