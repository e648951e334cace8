"""l3net.model.decode: one stored value in, a validated Resource or the reasons it is not one out.

The one decode path of the datastore's resources: ``l3netctl`` (through
:meth:`l3net.model.client.ResourceClient.decode`), the agent's model (:mod:`felix.calc`), its
registration and the route reflector all call :func:`decode`, so a value one of them takes is a
value all of them take. It is total: bytes that are not UTF-8, not JSON, nested deep enough for a
RecursionError, a document that does not validate or that names another resource than its key all
come back as :class:`Invalid`, never as an exception.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from dataclasses import replace as dc_replace

from l3net.errors import FieldError, ValidationError
from l3net.keys import KeyLayout
from l3net.model.resource import KINDS_BY_PLURAL, Resource
from l3net.model.validation import resource_from_document

_log = logging.getLogger(__name__)

__all__ = ["Invalid", "decode"]


@dataclass(frozen=True)
class Invalid:
    """A stored value that is not a valid resource: its key and every reason (each naming the key)."""

    key: str
    errors: tuple[FieldError, ...]

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)

    def exception(self) -> ValidationError:
        """The same reasons as the ValidationError that callers which raise use."""
        return ValidationError(list(self.errors))


def decode(keys: KeyLayout, key: str, raw: bytes, revision: int = 0) -> Resource | Invalid:
    """The resource stored at ``key`` with ``resource_version`` = ``revision``, or :class:`Invalid`."""
    try:
        return _decode(keys, key, raw, revision)
    except ValidationError as exc:
        return Invalid(key, tuple(exc.errors))
    except Exception as exc:  # by contract: bad stored data is Invalid, never a crash
        return Invalid(key, (FieldError(path="", document=key, reason=f"stored value does not decode: "
                                                                   f"{type(exc).__name__}: {str(exc)[:300]}"),))


def _decode(keys: KeyLayout, key: str, raw: bytes, revision: int) -> Resource:
    parsed = keys.parse_resource(key)
    info = KINDS_BY_PLURAL.get(parsed[0]) if parsed else None
    if parsed is None or info is None:
        raise ValidationError(FieldError(path="", reason="not a resource key", document=key))
    _, ns, name = parsed
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(FieldError(path="", reason=f"stored value is not JSON: {exc}", document=key)) from None
    res = resource_from_document(doc, key)
    if res.kind != info.kind or res.name != name or (info.namespaced and res.namespace != ns):
        raise ValidationError(FieldError(path="metadata", document=key,
                                         reason=f"stored document is {res.ref}, which does not match its key"))
    return dc_replace(res, resource_version=revision)
