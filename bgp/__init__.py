"""bgp: ExaBGP integration, Adj-RIB-In and best path, route reflection. Never touches the kernel."""
