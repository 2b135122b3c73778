"""Neighbours by DNS name and dynamic ranges: their configuration, and the pure helpers the node uses."""

from __future__ import annotations

from typing import Any

import pytest

from agentmesh.config import SESSION_KEYS, ConfigError, DynamicNeighborConfig, NeighborConfig, parse_config
from agentmesh.speaker.neighbors import derived_neighbor, dynamic_neighbor, matching_range, session_addresses


def config(*dynamic: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"node": {"name": "rr", "asn": 65001}, "dynamic_neighbors": list(dynamic), **sections}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value).splitlines()


def test_a_dynamic_range_with_every_key() -> None:
    parsed = parse_config(
        config(
            {
                "prefix": "10.20.0.0/16",
                "asn": 65001,
                "description": "clients",
                "hold_time": 30,
                "import_policy": {"policies": ["p"]},
                "export_policy": {"default": "reject"},
                "route_reflector_client": True,
                "max_prefixes": {"limit": 10},
                "tls_name": "*.clients.example",
                "limit": 5,
            },
            {"prefix": "FD00:0::/8", "asn": 65002},
            {"prefix": "127.0.0.7", "asn": 65002},
            policy={
                "policies": [{"name": "p", "statements": [{"name": "s", "actions": {"route": "accept"}}]}]
            },
        )
    )
    first, v6, single = parsed.dynamic_neighbors
    assert (first.limit, first.tls_name, first.max_prefixes and first.max_prefixes.limit) == (
        5,
        "*.clients.example",
        10,
    )
    assert (v6.prefix, v6.limit) == ("fd00::/8", 100)  # canonical, and the default limit
    assert single.prefix == "127.0.0.7/32"


def test_dynamic_ranges_are_checked_like_neighbours() -> None:
    assert problems(
        config(
            {"prefix": "10.0.0.1/8", "asn": 65002},
            {"prefix": "ten/8", "asn": 23456, "limit": 0},
            {"prefix": "10.0.0.0/8", "asn": 65002, "route_reflector_client": True},
            {"prefix": "10.0.0.0/8", "asn": 65001, "import_policy": {"policies": ["nope"]}, "hold_time": 10},
            timers={"keepalive_time": 10},
        )
    ) == [
        "<config>: dynamic_neighbors[0].prefix: '10.0.0.1/8' has bits set after the prefix length;"
        " did you mean 10.0.0.0/8?",
        "<config>: dynamic_neighbors[1].prefix: 'ten/8' is not an address range: write an IPv4 or IPv6"
        " prefix such as 10.0.0.0/8 or fd00::/8",
        "<config>: dynamic_neighbors[1].asn: AS 23456 is AS_TRANS, reserved as the 2-octet stand-in for"
        " 4-octet ASNs (RFC 6793); use a private ASN (64512-65534 or 4200000000-4294967294, RFC 6996)"
        " or one assigned to you",
        "<config>: dynamic_neighbors[1].limit: must be at least 1, got 0",
    ]
    assert problems(
        config(
            {"prefix": "10.0.0.0/8", "asn": 65002, "route_reflector_client": True},
            {"prefix": "10.0.0.0/8", "asn": 65001, "import_policy": {"policies": ["nope"]}, "hold_time": 10},
            timers={"keepalive_time": 10},
        )
    ) == [
        "<config>: dynamic_neighbors[0].route_reflector_client: AS65002 is not this node's AS65001: only"
        " iBGP neighbours can be route reflector clients (RFC 4456 §2)",
        "<config>: dynamic_neighbors[1].import_policy.policies[0]: unknown policy 'nope': no policies are"
        " defined (policy.policies)",
        "<config>: dynamic_neighbors[1].hold_time: hold time 10 must be greater than"
        " timers.keepalive_time (10)",
    ]


def test_resolve_interval_is_positive() -> None:
    assert parse_config({}).timers.resolve_interval == 30
    assert problems({"timers": {"resolve_interval": 0}}) == [
        "<config>: timers.resolve_interval: must be greater than 0 seconds, got 0"
    ]


def test_a_neighbour_host_is_a_dns_name_or_an_address() -> None:
    assert NeighborConfig(address="RR.Example:7000", asn=65001).dns_name == "rr.example"
    assert NeighborConfig(address="10.0.0.1:7000", asn=65001).dns_name is None
    assert NeighborConfig(address="[fe80::1%eth0]:7000", asn=65001).dns_name is None


def test_a_derived_neighbour_has_the_entry_settings_at_one_address() -> None:
    entry = NeighborConfig(address="rr.example:7000", asn=65001, description="reflectors", hold_time=30)
    derived = derived_neighbor(entry, "10.0.0.2:7000")
    assert derived == entry.model_copy(
        update={
            "address": "10.0.0.2:7000",
            "description": "reflectors (resolved from rr.example:7000)",
            "tls_name": "rr.example",
        }
    )
    named = entry.model_copy(update={"tls_name": "rr-0.example", "description": ""})
    assert derived_neighbor(named, "10.0.0.3:7000").tls_name == "rr-0.example"
    assert derived_neighbor(named, "10.0.0.3:7000").description == "resolved from rr.example:7000"


def test_resolved_endpoints_become_canonical_session_addresses() -> None:
    endpoints = [("10.0.0.2", 7000), ("0:0::1", 7000), ("10.0.0.2", 7000), ("10.0.0.1", 7001)]
    assert session_addresses(endpoints) == ["10.0.0.1:7001", "10.0.0.2:7000", "[::1]:7000"]
    with pytest.raises(ValueError):
        session_addresses([("not-an-ip", 7000)])


def test_a_dynamic_neighbour_is_passive_with_the_range_settings() -> None:
    entry = DynamicNeighborConfig(
        prefix="10.0.0.0/8", asn=65001, route_reflector_client=True, tls_name="*.c.example", add_paths=4
    )
    neighbor = dynamic_neighbor(entry, "10.1.1.1:7000")
    assert (neighbor.address, neighbor.asn, neighbor.passive) == ("10.1.1.1:7000", 65001, True)
    assert (neighbor.route_reflector_client, neighbor.tls_name, neighbor.add_paths) == (
        True,
        "*.c.example",
        4,
    )
    assert neighbor.description == "dynamic, 10.0.0.0/8"
    with pytest.raises(ValueError):
        dynamic_neighbor(entry, "no port")


def test_the_first_range_holding_the_source_address_wins() -> None:
    ranges = [
        DynamicNeighborConfig(prefix="127.0.0.2/32", asn=65002),
        DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65003),
        DynamicNeighborConfig(prefix="::1/128", asn=65004),
    ]
    assert matching_range(ranges, "127.0.0.2") == 0
    assert matching_range(ranges, "127.0.0.1") == 1
    assert matching_range(ranges, "::ffff:127.0.0.1") == 1  # IPv4 through a dual-stack listener
    assert matching_range(ranges, "::1") == 2
    assert matching_range(ranges, "10.0.0.1") is None
    assert matching_range(ranges, "unix:/tmp/socket") is None


def test_a_dynamic_range_has_every_session_key_a_neighbour_has() -> None:
    # A key added to neighbours and not to ranges (or to SESSION_KEYS) would not reach dynamic peers.
    assert set(NeighborConfig.model_fields) - set(SESSION_KEYS) == {"address", "passive"}
    assert set(DynamicNeighborConfig.model_fields) - set(SESSION_KEYS) == {"prefix", "limit"}
