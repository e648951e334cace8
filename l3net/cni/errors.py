"""l3net.cni.errors: the CNI error object and the spec's error codes."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is what this avoids
if TYPE_CHECKING:  # the shim imports this module: it starts on every ADD, so no typing at run time
    from typing import Any

# CNI spec 1.0.0 "Error" section; 100+ are plugin-specific.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
# l3net's own codes.
IPAM_REFUSED = 100
DATAPLANE_FAILURE = 101
CHECK_DRIFT = 102
INTERNAL_ERROR = 999


class CNIError(Exception):
    """One CNI failure: printed as ``{cniVersion, code, msg, details}`` on stdout, exit status 1."""

    def __init__(self, code: int, msg: str, details: str = ""):
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(f"[{code}] {msg}" + (f": {details}" if details else ""))

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
