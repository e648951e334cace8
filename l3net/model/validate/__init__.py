"""l3net.model.validate: the validation of resource documents, one module per job.

- ``checker``: the :class:`~l3net.model.validate.checker.Checker` that collects a document's errors,
  the check type and the combinators every rule is built from (objects, lists, strings, numbers, enums).
- ``names``: DNS-1123 names, label keys and values, the label and annotation maps of ``metadata``.
- ``addresses``: CIDRs, IP and interface addresses, BGP peer addresses, pool overlap.
- ``ports``: IANA port names, Kubernetes and Calico ports, Calico protocols.
- ``selectors``: Calico selector expressions and the Kubernetes LabelSelector.
- ``bgp_fields``: AS numbers, Go durations, BGP communities, hold/keepalive timer rules.
- ``ippool``, ``bgp`` (Node, BGPConfiguration, BGPPeer), ``workload`` (WorkloadEndpoint),
  ``k8s_policy`` (NetworkPolicy networking.k8s.io/v1), ``calico_policy`` (GlobalNetworkPolicy):
  the spec of each kind and the rules tying its name to its spec.
- ``kinds``: the registry from kind to spec check and name rule (and Namespace's empty spec).
- ``document``: the entry point, :func:`resource_from_document`, with apiVersion, kind and metadata.

Callers import from the facade :mod:`l3net.model.validation`; these modules are its implementation.
"""
