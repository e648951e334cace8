"""l3net.datastore.base: the narrow interface every datastore client implements.

The rest of l3net sees only this: keys are ``str``, values ``bytes``, and every
write that can race is a compare-and-swap on the key's mod revision.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 1
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["put", "delete"]
    key: str
    value: bytes | None
    mod_revision: int


# -- transaction operations (all-or-nothing in Datastore.commit) -----------
@dataclass(frozen=True)
class Create:
    """Write ``value`` only if ``key`` does not exist."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Update:
    """Write ``value`` only if ``key`` still has ``mod_revision``."""

    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Put:
    """Write ``value`` unconditionally."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Delete ``key``; if ``mod_revision`` is given, only if it still has it."""

    key: str
    mod_revision: int | None = None


@dataclass(frozen=True)
class Check:
    """Write nothing; the commit goes ahead only while ``key`` has ``mod_revision`` (0: only while it is absent).

    What a cached read vouches with: the transaction that acts on it fails if the read went stale.
    """

    key: str
    mod_revision: int


@dataclass(frozen=True)
class CheckPrefix:
    """Write nothing; the commit goes ahead only if no key under ``key`` (a prefix) was written after
    ``revision``. A deletion under the prefix is not noticed: use it where a vanished key can only make
    the reader more careful (a dropped reservation), and :class:`Check` where it matters."""

    key: str
    revision: int


Op = Create | Update | Put | Delete | Check | CheckPrefix


def check_range(prefix: str, before: str) -> None:
    """ValueError unless ``before`` cuts ``prefix``'s keys: it lies under ``prefix``, past the prefix itself."""
    if not before.startswith(prefix) or before == prefix:
        raise ValueError(f"range end {before!r} does not lie under the prefix {prefix!r}")


def in_range(key: str, prefix: str, before: str | None) -> bool:
    """Whether ``key`` is one of the keys a list or watch of ``prefix`` (cut at ``before``) covers."""
    return key.startswith(prefix) and (before is None or key < before)


class Watch(Protocol):
    """A running watch: iterate for batches of events; ``cancel()`` ends it.

    Iteration raises :class:`l3net.errors.Compacted` when the start revision is
    gone and :class:`l3net.errors.DatastoreUnavailable` when the stream breaks.
    """

    def __iter__(self) -> Iterator[list[WatchEvent]]: ...

    def cancel(self) -> None: ...


class Lease(Protocol):
    id: int

    def refresh(self) -> None: ...

    def revoke(self) -> None: ...


class Datastore(Protocol):
    """A key-value store with revisions, CAS, atomic multi-key commits and watches.

    Every method raises :class:`l3net.errors.DatastoreUnavailable` (naming the
    endpoint) when the store cannot be reached and :class:`l3net.errors.Conflict`
    when a compare fails. Implementations are safe to share between threads.
    """

    endpoint: str

    def get(self, key: str) -> KeyValue | None: ...

    def list(self, prefix: str, *, before: str | None = None) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` (sorted) and the store revision they were read at; with ``before``, only
        those that sort before it (one contiguous range, so one request)."""
        ...

    def put(self, key: str, value: bytes, lease: int = 0) -> int: ...

    def create(self, key: str, value: bytes, lease: int = 0) -> int: ...

    def update(self, key: str, value: bytes, mod_revision: int) -> int: ...

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """True if a key was deleted, False if it was already absent."""
        ...

    def commit(self, ops: Sequence[Op]) -> int:
        """Apply ``ops`` atomically; raise Conflict (changing nothing) if any compare fails."""
        ...

    def watch(self, prefix: str, start_revision: int, *, before: str | None = None) -> Watch:
        """Changes to the keys under ``prefix`` (with ``before``: only those that sort before it) from
        ``start_revision`` on."""
        ...

    def compact(self, revision: int) -> None: ...

    def grant_lease(self, ttl: int) -> Lease: ...

    def revision(self) -> int: ...

    def probe(self, timeout: float) -> int:
        """The store's revision, failing with DatastoreUnavailable unless an answer comes within ``timeout``
        seconds (a hung store keeps connections open: this is how it is noticed)."""
        ...

    def close(self) -> None: ...
