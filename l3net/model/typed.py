"""l3net.model.typed: what every typed-spec module of the model (``ippool_spec``, ``workload_spec``, ...) shares.

A typed spec is built from the spec the model's validation produced, once per Resource object, and kept on
that object (in its own ``__dict__``, as ``functools.cached_property`` does, which a frozen dataclass allows:
it lives and dies with the object, and a Resource with another spec is another object). A Resource the model
did not validate (built by hand) is validated here first, with the model's own rules, and refused with its
:class:`~l3net.errors.ValidationError`: no reader checks a spec with a grammar of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from l3net.errors import ValidationError
from l3net.model.resource import Resource
from l3net.model.validation import resource_from_document

__all__ = ["typed_once"]

T = TypeVar("T")


def typed_once(res: Resource, kind: str | tuple[str, ...], convert: Callable[[Mapping[str, Any]], T]) -> T:
    """``convert`` of the validated spec of ``res``, computed once per Resource object.

    ValueError when ``res`` is not a ``kind`` (or one of the ``kind`` tuple: kinds that share one spec);
    the model's ValidationError for a Resource built by hand that the model refuses.
    """
    kinds = (kind,) if isinstance(kind, str) else kind
    if res.kind not in kinds:
        raise ValueError(f"{res.ref} is not of kind {' or '.join(kinds)}")
    slot = f"_l3net_typed_{res.kind}"
    got = res.__dict__.get(slot)
    if got is None:
        got = convert(res.spec if res.validated else _validated_spec(res))
        res.__dict__[slot] = got
    return got   # type: ignore[no-any-return]


def _validated_spec(res: Resource) -> Mapping[str, Any]:
    try:
        return resource_from_document(res.to_document(), res.ref).spec
    except ValidationError:
        raise
    except (TypeError, ValueError) as exc:   # a spec that is not even a document: say which resource
        raise ValueError(f"{res.ref}: {exc}") from exc
