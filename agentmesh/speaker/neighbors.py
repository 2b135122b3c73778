"""Neighbours that are not configured one address at a time: by DNS name, and dynamic ranges.

A `neighbors` entry whose host is a DNS name stands for every address the name resolves to (a
headless Kubernetes Service, say): the node resolves it at start and every `timers.resolve_interval`
seconds, outside its owner task, and keeps one session per resolved `ip:port`, each a *derived*
neighbour with the entry's settings. The entry itself is a `NeighborGroup`; its sessions are keyed
by their addresses like any other neighbour, so inbound matching by claimed address, the RIB, the
metrics and the admin API see ordinary neighbours.

A `dynamic_neighbors` range accepts peers nobody configured: a Session whose claimed address is
no neighbour is matched by the IP address its connection comes from, and the first range holding
it makes a passive neighbour with the range's settings, which lasts as long as its session.

The functions here are pure; `Node` calls them from its owner task (and `resolve` from a task of
its own, since a DNS lookup may take seconds).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agentmesh.config import DynamicNeighborConfig, NeighborConfig, join_host_port

#: An address a name resolved to: (IP address, port).
Endpoint = tuple[str, int]
#: Resolves a host name and port to endpoints; raises OSError (socket.gaierror) when it cannot.
Resolver = Callable[[str, int], Awaitable[Sequence[Endpoint]]]


async def resolve(host: str, port: int) -> list[Endpoint]:
    """The system resolver (getaddrinfo, in the loop's executor): every IPv4 and IPv6 address of `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(str(info[4][0]), port) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def session_addresses(endpoints: Iterable[Endpoint]) -> list[str]:
    """Endpoints as canonical, distinct, sorted `ip:port` neighbour addresses; ValueError for a non-IP."""
    addresses = {join_host_port(str(ipaddress.ip_address(host)), port) for host, port in endpoints}
    return sorted(addresses)


@dataclass(slots=True)
class NeighborGroup:
    """A `neighbors` entry given by DNS name, and the addresses it has sessions with now."""

    config: NeighborConfig
    members: set[str] = field(default_factory=set)


def derived_neighbor(entry: NeighborConfig, address: str) -> NeighborConfig:
    """The neighbour at one address `entry`'s name resolved to: the entry's settings at that address.

    The certificate it must present names the DNS name unless the entry says otherwise, since that
    name, not the address, is what the operator configured.
    """
    where = f"resolved from {entry.address}"
    return entry.model_copy(
        update={
            "address": address,
            "description": f"{entry.description} ({where})" if entry.description else where,
            "tls_name": entry.tls_name if entry.tls_name is not None else entry.dns_name,
        }
    )


def dynamic_neighbor(entry: DynamicNeighborConfig, address: str) -> NeighborConfig:
    """A passive neighbour at `address` (what the peer claims) with a dynamic range's settings.

    Raises ValueError (a pydantic ValidationError) when `address` is not a dialable `host:port`.
    """
    where = f"dynamic, {entry.prefix}"
    settings = entry.session_key_values()
    settings["description"] = f"{entry.description} ({where})" if entry.description else where
    return NeighborConfig(address=address, passive=True, **settings)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address without its zone, IPv4-mapped IPv6 as IPv4; None if `text` is no IP address."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client of a dual-stack listener, seen as ::ffff:a.b.c.d
    return address


def is_ip_address(host: str) -> bool:
    return _ip(host) is not None


def same_ip(a: str, b: str) -> bool:
    """Whether two texts are the same IP address (however written)."""
    first = _ip(a)
    return first is not None and first == _ip(b)


def in_prefix(host: str, prefix: str) -> bool:
    address = _ip(host)
    return address is not None and address in ipaddress.ip_network(prefix)


def matching_range(ranges: Sequence[DynamicNeighborConfig], source_host: str) -> int | None:
    """The index of the first range holding `source_host`, None when none does (or it is no IP)."""
    source = _ip(source_host)
    if source is None:
        return None
    return next((index for index, entry in enumerate(ranges) if source in entry.network()), None)
