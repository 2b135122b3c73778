"""The server reads where a Session call came from out of grpc's peer string."""

import pytest

from agentmesh.transport.server import source_host


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:50321", "127.0.0.1"),
        ("ipv4:10.1.2.3:7000", "10.1.2.3"),
        ("ipv6:[::1]:50321", "::1"),
        ("ipv6:%5B::1%5D:50321", "::1"),  # what grpc reports: the brackets URL-encoded
        ("ipv6:%5Bfe80::1%25lo%5D:1", "fe80::1%lo"),
        ("unix:/tmp/socket", None),
        ("", None),
        (None, None),
    ],
)
def test_source_host(peer: str | None, host: str | None) -> None:
    assert source_host(peer) == host
