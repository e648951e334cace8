"""policy: label selectors, NetworkPolicy semantics and their compilation to iptables and ipsets. Pure."""
