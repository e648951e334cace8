"""l3net.lab.namespaces: Kubernetes Namespace labels in the lab's datastore (``lab namespace label``)."""

from __future__ import annotations

import os

from l3net.lab.errors import LabError
from l3net.lab.node import PREFIX_ENV


def label_namespace(endpoints: str, namespace: str, changes: list[str]) -> dict[str, str]:
    """Apply ``k=v`` (set) and ``k-`` (remove) to Namespace ``namespace``; returns the resulting labels."""
    from l3net.datastore import connect_from_env
    from l3net.keys import KeyLayout
    from l3net.model.client import ResourceClient
    from l3net.model.resource import Resource

    ds = connect_from_env(endpoints)
    try:
        client = ResourceClient(ds, KeyLayout(os.environ.get(PREFIX_ENV) or KeyLayout().prefix))
        current = client.get("Namespace", namespace)
        labels = dict(current.labels) if current is not None else {}
        for change in changes:
            if change.endswith("-") and "=" not in change:
                labels.pop(change[:-1], None)
                continue
            k, sep, v = change.partition("=")
            if not sep or not k:
                raise LabError(f"expected key=value or key-, got {change!r}")
            labels[k] = v
        client.apply([Resource(kind="Namespace", name=namespace, labels=labels)])
        return labels
    finally:
        ds.close()
