"""l3net.model.labels: the implicit labels l3net puts on every endpoint, and the keys only it may set.

Core code (CNI plugin, kube-controller) and the policy engine share these, so they live in the model.
"""

from __future__ import annotations

# Calico's implicit endpoint labels, and the prefix under which an endpoint carries its namespace's labels
# (so a namespaceSelector is just a selector over ``pcns.``-prefixed keys, as in libcalico-go).
CALICO_NAMESPACE_LABEL = "projectcalico.org/namespace"
CALICO_ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
CALICO_SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_LABEL_PREFIX = "pcns."
# Calico puts a service account's labels on its pods' endpoints under this prefix.
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
# Label keys only l3net may set on an endpoint: a stored or CNI-passed label with one of these
# keys is dropped, so a pod cannot claim another namespace's labels (issue 13, finding 5).
RESERVED_LABEL_PREFIXES = (NAMESPACE_LABEL_PREFIX, "projectcalico.org/")


def is_reserved_label(key: str) -> bool:
    """True for a key that only l3net's implicit labels may carry (``pcns.*``, ``projectcalico.org/*``)."""
    return key.startswith(RESERVED_LABEL_PREFIXES)
