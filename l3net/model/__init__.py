"""l3net.model: resources, their validation and their storage in the datastore."""

from l3net.model.resource import KINDS, KindInfo, Resource, kind_info

__all__ = ["KINDS", "KindInfo", "Resource", "kind_info"]
