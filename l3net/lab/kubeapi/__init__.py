"""l3net.lab.kubeapi: the lab's stand-in for a Kubernetes API server.

**A lab stand-in that production never uses.** No kube-apiserver is packaged for
these machines, so the lab (``l3net lab up --kubernetes``) and the tests run this
small server instead. It follows the Kubernetes API concepts for what
``kubectl``, the kube-controller and the CNI plugin use: discovery, list with
``limit``/``continue`` (a consistent snapshot at the first page's
resourceVersion), watch from a ``resourceVersion`` with bookmarks, ``410 Gone``
for a version older than the retained event window, optimistic concurrency
(``409 Conflict``), label and field selectors, create/get/update/patch (JSON,
merge and strategic-merge patches as ``kubectl`` sends them)/delete, for
Namespaces, Pods, Nodes, ServiceAccounts, NetworkPolicies and Leases (plus ConfigMaps,
Secrets, DaemonSets, Deployments and RBAC objects, stored as they are so ``deploy/`` applies).

It does not authenticate, admit, default beyond what its clients read, garbage
collect or run graceful deletion: a deleted object is gone at once.
"""

from l3net.lab.kubeapi.server import KubeAPIServer
from l3net.lab.kubeapi.store import ApiError, Store

__all__ = ["ApiError", "KubeAPIServer", "Store"]
