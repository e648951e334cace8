"""l3net.ipam: Calico-style block-affinity IP address management stored in etcd."""

from l3net.ipam.allocator import (
    IPAM,
    AddressUnavailable,
    IPAMError,
    NoAddresses,
    RetriesExhausted,
)
from l3net.ipam.block import Block
from l3net.ipam.pools import IPAMConfig, Pool
from l3net.ipam.report import IPAMReport

__all__ = ["IPAM", "AddressUnavailable", "Block", "IPAMConfig", "IPAMError", "IPAMReport", "NoAddresses", "Pool",
           "RetriesExhausted"]
