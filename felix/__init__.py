"""felix: the per-node agent (the vRouter): sync loop and the dataplane drivers. The only kernel writer."""
