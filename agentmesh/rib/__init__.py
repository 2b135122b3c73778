"""Sans-IO routing core: names, attribute interning, the decision process and the RIBs.

Like `agentmesh.bgp`, nothing here does I/O, reads a clock or imports grpc/asyncio.
"""
