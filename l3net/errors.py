"""l3net.errors: the exceptions that cross module boundaries.

Validation errors always name the document, the field path and the reason, so
that every surface (CLI, CNI plugin, agent log) can report them verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one document."""

    path: str
    reason: str
    document: str = ""

    def __str__(self) -> str:
        parts = [p for p in (self.document, self.path) if p]
        return ": ".join([*parts, self.reason])


class ValidationError(ValueError):
    """Bad input. Carries every FieldError found, never partial results."""

    def __init__(self, errors: list[FieldError] | FieldError | str, *, document: str = "", path: str = ""):
        if isinstance(errors, str):
            errors = [FieldError(path=path, reason=errors, document=document)]
        elif isinstance(errors, FieldError):
            errors = [errors]
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


class DatastoreError(Exception):
    """Base of every datastore failure."""


class DatastoreUnavailable(DatastoreError):
    """The datastore could not be reached; names the endpoint."""

    def __init__(self, endpoint: str, detail: str = ""):
        self.endpoint = endpoint
        self.detail = detail
        msg = f"datastore unreachable at {endpoint}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class Conflict(DatastoreError):
    """A compare-and-swap lost: the key changed (or exists, or vanished) since it was read."""


class Compacted(DatastoreError):
    """A watch asked for a revision that etcd has compacted away; the caller must resync."""

    def __init__(self, compact_revision: int):
        self.compact_revision = compact_revision
        super().__init__(f"revision compacted (compact_revision={compact_revision})")
