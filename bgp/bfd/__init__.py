"""bgp.bfd: Bidirectional Forwarding Detection (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5883 multihop).

``packet`` is the wire codec, ``session`` the pure per-session state machine on an injected
clock, ``speaker`` the asyncio transport that owns the sockets of one network namespace.
It never touches routes: the agent decides what a session going down means.
"""
