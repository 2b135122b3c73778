"""Sans-IO BGP core: messages, OPEN handling, the RFC 4271 session FSM and per-peer sessions.

Nothing in this package does I/O, reads a clock or imports grpc/asyncio: time comes in as an
argument and effects go out as data, so every behaviour can be replayed in a unit test.
"""
