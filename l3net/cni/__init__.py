"""l3net.cni: the ``l3net-cni`` CNI plugin (Calico-style veth wiring, IPAM in etcd)."""
