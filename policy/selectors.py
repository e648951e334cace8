"""policy.selectors: the selector index :mod:`policy.index` keeps current (which endpoints each selector matches).

The selectors themselves are the model's (:mod:`l3net.model.selectors`, one grammar, fail closed).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from l3net.model.selectors import Selector

__all__ = ["SelectorIndex"]


class SelectorIndex:
    """Owns the map selector id -> member ids, kept current as selectors and labelled items change.

    Incremental: adding a selector scans the items once; updating one item's labels
    re-evaluates every *distinct* selector against that item only (many ids that
    share one selector, e.g. policies selecting the same app, cost one match).
    Changed selector ids accumulate until :meth:`pop_changes`. Not thread-safe (one
    loop owns it). Never raises on content: a selector is whatever :class:`Selector` says.
    """

    def __init__(self) -> None:
        self._selectors: dict[Hashable, Selector] = {}
        self._ids: dict[Selector, set[Hashable]] = {}        # distinct selector -> the ids using it
        self._members: dict[Selector, set[Hashable]] = {}    # distinct selector -> matching items
        self._items: dict[Hashable, Mapping[str, str]] = {}
        self._changed: set[Hashable] = set()

    def add_selector(self, sel_id: Hashable, sel: Selector) -> None:
        old = self._selectors.get(sel_id)
        if old == sel:
            return
        if old is not None:
            self._drop(sel_id, old)
        self._selectors[sel_id] = sel
        if sel not in self._ids:
            self._ids[sel] = set()
            self._members[sel] = {item for item, labels in self._items.items() if sel.matches(labels)}
        self._ids[sel].add(sel_id)
        if old is None or self._members.get(old, set()) != self._members[sel]:
            self._changed.add(sel_id)

    def _drop(self, sel_id: Hashable, sel: Selector) -> None:
        ids = self._ids[sel]
        ids.discard(sel_id)
        if not ids:
            del self._ids[sel]
            del self._members[sel]

    def remove_selector(self, sel_id: Hashable) -> None:
        sel = self._selectors.pop(sel_id, None)
        if sel is not None:
            self._drop(sel_id, sel)
            self._changed.add(sel_id)

    def update_item(self, item_id: Hashable, labels: Mapping[str, str]) -> None:
        """Add an item or change its labels."""
        if self._items.get(item_id) == labels:
            return
        self._items[item_id] = dict(labels)
        for sel, members in self._members.items():
            if sel.matches(labels):
                if item_id not in members:
                    members.add(item_id)
                    self._changed.update(self._ids[sel])
            elif item_id in members:
                members.discard(item_id)
                self._changed.update(self._ids[sel])

    def remove_item(self, item_id: Hashable) -> None:
        if self._items.pop(item_id, None) is None:
            return
        for sel, members in self._members.items():
            if item_id in members:
                members.discard(item_id)
                self._changed.update(self._ids[sel])

    def members(self, sel_id: Hashable) -> frozenset[Hashable]:
        sel = self._selectors.get(sel_id)
        return frozenset(self._members[sel]) if sel is not None else frozenset()

    def matching(self, item_id: Hashable) -> set[Hashable]:
        """The selector ids whose selector matches ``item_id`` (one look-up per distinct selector)."""
        out: set[Hashable] = set()
        for sel, members in self._members.items():
            if item_id in members:
                out.update(self._ids[sel])
        return out

    def contains(self, sel_id: Hashable, item_id: Hashable) -> bool:
        sel = self._selectors.get(sel_id)
        return sel is not None and item_id in self._members[sel]

    def selectors(self) -> Iterable[Hashable]:
        return tuple(self._selectors)

    def items(self) -> Iterable[Hashable]:
        return tuple(self._items)

    def pop_changes(self) -> set[Hashable]:
        """Selector ids whose member set changed (or that were removed) since the last call."""
        changed, self._changed = self._changed, set()
        return changed
