"""l3net.kube: the kube-controller, which keeps the datastore equal to the Kubernetes API.

Core (``l3net``) code: it imports the model, the datastore and IPAM, never
``felix``, ``bgp`` or ``policy``.
"""
