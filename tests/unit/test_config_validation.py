"""Tests for agentmesh.config: defaults, derivations, and one test per validation error."""

from __future__ import annotations

import pickle
import re
import socket
import typing
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agentmesh.config import (
    AdminConfig,
    BackendConfig,
    Config,
    ConfigError,
    DampingConfig,
    DynamicNeighborConfig,
    ForwardingConfig,
    GracefulRestartConfig,
    HealthConfig,
    LocalFunctionConfig,
    MaxPrefixesConfig,
    McpConfig,
    MetricsConfig,
    NeighborConfig,
    NodeConfig,
    TimersConfig,
    TlsConfig,
    check_tls_name,
    derive_asn,
    derive_router_id,
    int_to_router_id,
    is_reserved_asn,
    join_host_port,
    load_config,
    parse_config,
    router_id_to_int,
    split_host_port,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "three-node"
DOCS = REPO / "docs" / "configuration.md"


def neighbor(address: str = "127.0.0.1:50052", asn: int = 65002, **extra: Any) -> dict[str, Any]:
    return {"address": address, "asn": asn, **extra}


def with_neighbors(*neighbors: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"node": {"name": "node-a", "asn": 65001}, "neighbors": list(neighbors), **sections}


def write(tmp_path: Path, text: str, name: str = "node.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults


def test_no_arguments_gives_a_valid_default_config() -> None:
    config = Config()
    assert config == parse_config({})
    assert config.node.listen == "127.0.0.1:50051"
    assert config.node.advertise_address == "127.0.0.1:50051"
    assert config.neighbors == ()
    assert config.timers == TimersConfig(
        hold_time=90, keepalive_time=None, connect_retry_time=120.0, connect_retry_initial=1.0
    )
    assert config.timers.effective_keepalive_time == 30


def test_default_name_is_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "build-host.example")
    node = Config().node
    assert node.name == "build-host.example"
    assert node.router_id == derive_router_id("build-host.example")
    assert node.asn == derive_asn(node.router_id)


def test_default_name_sanitises_an_unusual_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "_odd host!")
    assert Config().node.name == "odd-host-"
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert Config().node.name == "agentmesh"


def test_null_means_default() -> None:
    config = parse_config(
        {
            "node": {"name": None, "asn": None, "router_id": None, "advertise_address": None},
            "timers": {"keepalive_time": None, "hold_time": None},
            "neighbors": [neighbor(description=None, passive=None, hold_time=None)],
        }
    )
    assert config.timers.hold_time == 90
    assert config.neighbors[0].description == ""
    assert config.neighbors[0].passive is False
    assert parse_config({"node": None, "timers": None, "neighbors": None}).neighbors == ()


def test_router_id_derived_from_name_and_asn_from_router_id() -> None:
    config = parse_config({"node": {"name": "node-a"}})
    assert config.node.router_id == derive_router_id("node-a")
    assert config.node.asn == derive_asn(config.node.router_id)
    explicit = parse_config({"node": {"name": "node-a", "router_id": "10.0.0.1"}})
    assert explicit.node.asn == derive_asn("10.0.0.1")


def test_models_are_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.node.name = "other"  # type: ignore[misc]


def test_is_internal_follows_from_the_asns() -> None:
    config = parse_config(
        with_neighbors(neighbor("127.0.0.1:50052", 65001), neighbor("127.0.0.1:50053", 65003))
    )
    ibgp, ebgp = config.neighbors
    assert config.is_internal(ibgp)
    assert not config.is_internal(ebgp)


def test_per_neighbour_timers() -> None:
    config = parse_config(
        with_neighbors(
            neighbor("127.0.0.1:50052", hold_time=9),
            neighbor("127.0.0.1:50053", hold_time=0),
            neighbor("127.0.0.1:50054"),
        )
    )
    short, none, default = config.neighbors
    assert (config.hold_time_for(short), config.keepalive_time_for(short)) == (9, 3)
    assert (config.hold_time_for(none), config.keepalive_time_for(none)) == (0, 0)
    assert (config.hold_time_for(default), config.keepalive_time_for(default)) == (90, 30)


def test_effective_keepalive_time() -> None:
    assert TimersConfig(hold_time=0).effective_keepalive_time == 0
    assert TimersConfig(hold_time=3).effective_keepalive_time == 1
    assert TimersConfig(hold_time=90, keepalive_time=10).effective_keepalive_time == 10
    assert TimersConfig(hold_time=0, keepalive_time=0).effective_keepalive_time == 0


def test_integer_seconds_are_accepted_for_float_timers() -> None:
    timers = parse_config({"timers": {"connect_retry_time": 30, "connect_retry_initial": 2}}).timers
    assert (timers.connect_retry_time, timers.connect_retry_initial) == (30.0, 2.0)


def test_advertise_address_defaults_to_listen_including_port_zero() -> None:
    node = parse_config({"node": {"listen": "[::1]:0"}}).node
    assert node.advertise_address == "[::1]:0"
    node = parse_config({"node": {"listen": "0.0.0.0:50051", "advertise_address": "a.b:50051"}}).node
    assert node.advertise_address == "a.b:50051"


# --------------------------------------------------------------------------- derivations


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True))
def test_derivations_are_deterministic_in_range_and_not_reserved(name: str) -> None:
    router_id = derive_router_id(name)
    assert router_id == derive_router_id(name)
    assert router_id_to_int(router_id) != 0
    asn = derive_asn(router_id)
    assert asn == derive_asn(router_id)
    assert 4_200_000_000 <= asn <= 4_294_967_294
    assert is_reserved_asn(asn) is None
    node = NodeConfig(name=name)
    assert (node.router_id, node.asn) == (router_id, asn)


def test_derived_router_id_is_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zlib, "crc32", lambda data: 0)
    assert derive_router_id("anything") == "0.0.0.1"


def test_derived_asn_covers_both_ends_of_the_private_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zlib, "crc32", lambda data: 0)
    assert derive_asn("10.0.0.1") == 4_200_000_000
    monkeypatch.setattr(zlib, "crc32", lambda data: 94_967_294)
    assert derive_asn("10.0.0.1") == 4_294_967_294


def test_router_id_conversions() -> None:
    assert router_id_to_int("10.0.0.1") == 0x0A000001
    assert int_to_router_id(0x0A000001) == "10.0.0.1"
    assert int_to_router_id(router_id_to_int("255.255.255.255")) == "255.255.255.255"
    with pytest.raises(ValueError, match="not a dotted-quad"):
        router_id_to_int("10.0.0")
    with pytest.raises(ValueError, match="not a 32-bit"):
        int_to_router_id(1 << 32)


@pytest.mark.parametrize("asn", [1, 64495, 64512, 65534, 131072, 4_200_000_000, 4_294_967_294])
def test_usable_asns_are_not_reserved(asn: int) -> None:
    assert is_reserved_asn(asn) is None


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:50051", ("::1", 50051)),
        ("[0:0:0:0:0:0:0:1]:1", ("::1", 1)),
        ("[2001:DB8::10]:443", ("2001:db8::10", 443)),
        ("[fe80::1%eth0]:50051", ("fe80::1%eth0", 50051)),
        ("[::]:0", ("::", 0)),
        ("Node-B.Mesh.svc:50052", ("node-b.mesh.svc", 50052)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected
    assert split_host_port(join_host_port(*expected)) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", "missing a port"),
        ("[::1]", "missing a port"),
        ("::1:50051", "must be written in brackets"),
        ("[::1:50051", "missing the ']'"),
        ("[::1]50051", "expected ':port' after ']'"),
        ("[not-v6]:1", "not a valid IPv6 address"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:65536", "port 65536 is out of range 0..65535"),
        ("127.0.0.1:", "port '' is not a number"),
        (":50051", "missing a host"),
        ("256.0.0.1:1", "'256.0.0.1' is not a valid IPv4 address"),
        ("bad_host!:1", "not a valid host name"),
        ("", "empty address"),
        (" 127.0.0.1:1", "whitespace"),
    ],
)
def test_split_host_port_errors(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_host_port(address)


def test_ipv6_addresses_in_config() -> None:
    config = parse_config(
        {
            "node": {"name": "v6", "asn": 65001, "listen": "[::]:50051", "advertise_address": "[::1]:50051"},
            "neighbors": [neighbor("[0:0::1]:50052")],
        }
    )
    assert config.node.listen == "[::]:50051"
    assert config.neighbors[0].address == "[::1]:50052"


# --------------------------------------------------------------------------- validation errors


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"^<config>: neigbors: unknown key \(did you mean 'neighbors'\?\)"):
        parse_config({"neigbors": []})


def test_unknown_key_in_node() -> None:
    with pytest.raises(
        ConfigError,
        match=r"node\.port: unknown key; allowed keys here: advertise_address, asn, cluster_id, listen, name,"
        r" router_id",
    ):
        parse_config({"node": {"port": 50051}})


def test_unknown_key_in_neighbor() -> None:
    with pytest.raises(
        ConfigError, match=r"neighbors\[1\]\.pasive: unknown key \(did you mean 'passive'\?\)"
    ):
        parse_config(with_neighbors(neighbor(), neighbor("127.0.0.1:50053", pasive=True)))


def test_unknown_key_in_timers() -> None:
    with pytest.raises(ConfigError, match=r"timers\.holdtime: unknown key \(did you mean 'hold_time'\?\)"):
        parse_config({"timers": {"holdtime": 90}})


@pytest.mark.parametrize(
    ("asn", "message"),
    [
        (4_294_967_296, "ASN 4294967296 is out of range: AS numbers are 32-bit unsigned integers"),
        (-1, "ASN -1 is out of range"),
        ("65002", "expected an integer, got str '65002'"),
        (65002.0, "expected an integer, got float 65002.0"),
        (True, "expected an integer, got bool True"),
        (None, "expected an integer, got null"),
    ],
)
def test_bad_neighbor_asn(asn: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"neighbors\[1\]\.asn: " + re.escape(message)):
        parse_config(with_neighbors(neighbor(), neighbor("127.0.0.1:50053", asn)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("asn", "message"),
    [
        (0, "AS 0 is reserved and must not be used in BGP (RFC 7607)"),
        (23456, "AS 23456 is AS_TRANS, reserved as the 2-octet stand-in for 4-octet ASNs (RFC 6793)"),
        (64496, "AS 64496-64511 are reserved for documentation (RFC 5398)"),
        (64511, "AS 64496-64511 are reserved for documentation (RFC 5398)"),
        (65536, "AS 65536-65551 are reserved for documentation (RFC 5398)"),
        (65551, "AS 65536-65551 are reserved for documentation (RFC 5398)"),
        (65535, "AS 65535, the last 16-bit ASN, is reserved (RFC 7300)"),
        (4_294_967_295, "AS 4294967295, the last 32-bit ASN, is reserved (RFC 7300)"),
        (65552, "AS 65552-131071 are reserved by IANA"),
        (131071, "AS 65552-131071 are reserved by IANA"),
    ],
)
def test_reserved_asn(asn: int, message: str) -> None:
    assert is_reserved_asn(asn) == message
    with pytest.raises(ConfigError, match=r"node\.asn: " + re.escape(message) + "; use a private ASN"):
        parse_config({"node": {"asn": asn}})
    with pytest.raises(ConfigError, match=r"neighbors\[0\]\.asn: " + re.escape(message)):
        parse_config(with_neighbors(neighbor(asn=asn)))


def test_is_reserved_asn_reports_values_outside_32_bits() -> None:
    assert (
        is_reserved_asn(-1)
        == is_reserved_asn(1 << 32)
        == ("outside the 32-bit AS number space 0..4294967295 (RFC 6793)")
    )


def test_missing_required_neighbor_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_neighbors({"description": "x"}))
    assert str(caught.value).splitlines() == [
        "<config>: neighbors[0].address: required key is missing",
        "<config>: neighbors[0].asn: required key is missing",
    ]


def test_duplicate_neighbor() -> None:
    with pytest.raises(
        ConfigError,
        match=r"neighbors\[2\]\.address: duplicate neighbour 127\.0\.0\.1:50052, already configured as "
        r"neighbors\[0\]",
    ):
        parse_config(
            with_neighbors(neighbor(), neighbor("127.0.0.1:50053", 65003), neighbor("127.0.0.1:50052", 65009))
        )


def test_duplicate_neighbor_after_canonicalisation() -> None:
    with pytest.raises(ConfigError, match=r"neighbors\[1\]\.address: duplicate neighbour \[::1\]:50052"):
        parse_config(with_neighbors(neighbor("[::1]:50052"), neighbor("[0::0:1]:50052")))


@pytest.mark.parametrize("hold_time", [1, 2])
def test_global_hold_time_one_or_two(hold_time: int) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"timers\.hold_time: hold time {hold_time} is invalid: it must be 0 \(no keepalives\) "
        r"or at least 3 seconds \(RFC 4271 §4\.2\)",
    ):
        parse_config({"timers": {"hold_time": hold_time}})


@pytest.mark.parametrize("hold_time", [1, 2])
def test_neighbor_hold_time_one_or_two(hold_time: int) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"neighbors\[0\]\.hold_time: hold time {hold_time} is invalid: .*RFC 4271 §4\.2",
    ):
        parse_config(with_neighbors(neighbor(hold_time=hold_time)))


def test_hold_time_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"timers\.hold_time: hold time 65536 exceeds 65535"):
        parse_config({"timers": {"hold_time": 65536}})
    with pytest.raises(ConfigError, match=r"neighbors\[0\]\.hold_time: hold time -3 is negative"):
        parse_config(with_neighbors(neighbor(hold_time=-3)))


@pytest.mark.parametrize(("hold_time", "keepalive_time"), [(90, 90), (90, 100), (3, 3)])
def test_keepalive_not_less_than_hold(hold_time: int, keepalive_time: int) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"timers\.keepalive_time: keepalive time {keepalive_time} must be at least 1 and less "
        rf"than the hold time {hold_time}",
    ):
        parse_config({"timers": {"hold_time": hold_time, "keepalive_time": keepalive_time}})


def test_keepalive_zero_with_nonzero_hold() -> None:
    with pytest.raises(ConfigError, match=r"timers\.keepalive_time: keepalive time 0 must be at least 1"):
        parse_config({"timers": {"keepalive_time": 0}})


def test_keepalive_with_zero_hold() -> None:
    with pytest.raises(
        ConfigError, match=r"timers\.keepalive_time: must be 0 or null when hold_time is 0 \(no keepalives\)"
    ):
        parse_config({"timers": {"hold_time": 0, "keepalive_time": 30}})


def test_keepalive_not_less_than_neighbor_hold_override() -> None:
    with pytest.raises(
        ConfigError,
        match=r"neighbors\[0\]\.hold_time: hold time 20 must be greater than timers\.keepalive_time \(30\)",
    ):
        parse_config(with_neighbors(neighbor(hold_time=20), timers={"keepalive_time": 30}))


def test_connect_retry_timers() -> None:
    with pytest.raises(
        ConfigError, match=r"timers\.connect_retry_time: must be greater than 0 seconds, got 0"
    ):
        parse_config({"timers": {"connect_retry_time": 0}})
    with pytest.raises(ConfigError, match=r"timers\.connect_retry_initial: must be greater than 0 seconds"):
        parse_config({"timers": {"connect_retry_initial": -1.5}})
    with pytest.raises(
        ConfigError,
        match=r"timers\.connect_retry_initial: 200 must not exceed connect_retry_time \(120\)",
    ):
        parse_config({"timers": {"connect_retry_initial": 200}})
    with pytest.raises(ConfigError, match=r"timers\.connect_retry_time: expected a finite number"):
        parse_config({"timers": {"connect_retry_time": float("inf")}})


@pytest.mark.parametrize(
    ("router_id", "message"),
    [
        ("10.0.0", "'10.0.0' is not a dotted-quad IPv4 address (e.g. 10.0.0.1)"),
        ("10.0.0.256", "'10.0.0.256' is not a dotted-quad IPv4 address"),
        ("router-1", "'router-1' is not a dotted-quad IPv4 address"),
        ("0.0.0.0", "0.0.0.0 is not a valid router id: it must be non-zero (RFC 6286 §2.1)"),
        (167772161, "expected a string, got int 167772161"),
    ],
)
def test_bad_router_id(router_id: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"node\.router_id: " + re.escape(message)):
        parse_config({"node": {"router_id": router_id}})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("node a", "'node a' may contain only letters, digits"),
        ("-node", "must start with a letter or digit"),
        ("x" * 254, "is 254 characters long; the limit is 253"),
        (True, "expected a string, got bool True (quote the value in YAML to make it a string)"),
    ],
)
def test_bad_name(name: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"node\.name: .*" + re.escape(message)):
        parse_config({"node": {"name": name}})


def test_neighbor_address_missing_port() -> None:
    with pytest.raises(
        ConfigError,
        match=r"neighbors\[0\]\.address: '127\.0\.0\.1' is missing a port \(expected host:port, "
        r"e\.g\. 127\.0\.0\.1:50051\)",
    ):
        parse_config(with_neighbors(neighbor("127.0.0.1")))


def test_neighbor_address_port_out_of_range() -> None:
    with pytest.raises(
        ConfigError, match=r"neighbors\[0\]\.address: '127\.0\.0\.1:70000': port 70000 is out of range"
    ):
        parse_config(with_neighbors(neighbor("127.0.0.1:70000")))


def test_neighbor_address_port_zero() -> None:
    with pytest.raises(
        ConfigError, match=r"neighbors\[0\]\.address: '127\.0\.0\.1:0': port 0 cannot be dialled"
    ):
        parse_config(with_neighbors(neighbor("127.0.0.1:0")))


def test_neighbor_address_wildcard() -> None:
    with pytest.raises(
        ConfigError, match=r"neighbors\[0\]\.address: '0\.0\.0\.0:50052': 0\.0\.0\.0 is a wildcard address"
    ):
        parse_config(with_neighbors(neighbor("0.0.0.0:50052")))


def test_listen_address_errors() -> None:
    with pytest.raises(ConfigError, match=r"node\.listen: '127\.0\.0\.1:99999': port 99999 is out of range"):
        parse_config({"node": {"listen": "127.0.0.1:99999"}})
    with pytest.raises(ConfigError, match=r"node\.listen: 'localhost' is missing a port"):
        parse_config({"node": {"listen": "localhost"}})


def test_advertise_address_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"node\.advertise_address: '\[::\]:50051': :: is a wildcard address"
    ):
        parse_config({"node": {"advertise_address": "[::]:50051"}})
    with pytest.raises(
        ConfigError, match=r"node\.advertise_address: '10\.0\.0\.1:0': port 0 is only allowed when the listen"
    ):
        parse_config({"node": {"advertise_address": "10.0.0.1:0"}})


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051"])
def test_wildcard_listen_requires_advertise_address(listen: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"node\.advertise_address: required because listen \(.*\) binds a wildcard address",
    ):
        parse_config({"node": {"listen": listen}})


def test_neighbor_is_own_advertise_address() -> None:
    with pytest.raises(
        ConfigError,
        match=r"neighbors\[0\]\.address: 10\.0\.0\.1:50051 is this node's own advertise_address; "
        r"a node cannot peer with itself",
    ):
        parse_config(
            {
                "node": {"listen": "0.0.0.0:50051", "advertise_address": "10.0.0.1:50051"},
                "neighbors": [neighbor("10.0.0.1:50051")],
            }
        )


def test_neighbor_is_own_listen_address() -> None:
    with pytest.raises(
        ConfigError, match=r"neighbors\[0\]\.address: 127\.0\.0\.1:50051 is this node's own listen;"
    ):
        parse_config(
            {
                "node": {"listen": "127.0.0.1:50051", "advertise_address": "node-a.mesh:50051"},
                "neighbors": [neighbor("127.0.0.1:50051")],
            }
        )


def test_wrong_section_types() -> None:
    with pytest.raises(ConfigError, match=r"node: expected a mapping, got list \[\]"):
        parse_config({"node": []})
    with pytest.raises(ConfigError, match=r"neighbors: expected a list, got dict"):
        parse_config({"neighbors": {"address": "127.0.0.1:50052"}})
    with pytest.raises(
        ConfigError, match=r"neighbors\[0\]: expected a mapping, got str '127\.0\.0\.1:50052'"
    ):
        parse_config({"neighbors": ["127.0.0.1:50052"]})
    with pytest.raises(ConfigError, match=r"neighbors\[0\]\.passive: expected true or false, got str 'yes'"):
        parse_config(with_neighbors(neighbor(passive="yes")))


def test_every_problem_is_reported_one_per_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"node": {"asn": 0, "colour": "red"}, "timers": {"hold_time": 1}},
            source="node.yaml",
        )
    error = caught.value
    assert str(error).splitlines() == [
        "node.yaml: node.asn: AS 0 is reserved and must not be used in BGP (RFC 7607); use a private ASN "
        "(64512-65534 or 4200000000-4294967294, RFC 6996) or one assigned to you",
        "node.yaml: node.colour: unknown key; allowed keys here: advertise_address, asn, cluster_id, listen, "
        "name, router_id",
        "node.yaml: timers.hold_time: hold time 1 is invalid: it must be 0 (no keepalives) or at least "
        "3 seconds (RFC 4271 §4.2)",
    ]
    assert [p.location for p in error.problems] == ["node.asn", "node.colour", "timers.hold_time"]
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.problems) == (str(error), error.problems)


@pytest.mark.parametrize(("data", "kind"), [([], "list"), ("node: a", "str"), (42, "int")])
def test_non_mapping_document(data: object, kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"^<config>: the configuration must be a mapping .*, got {kind}$"):
        parse_config(data)


# --------------------------------------------------------------------------- tls


def test_no_tls_section_means_plaintext() -> None:
    assert Config().tls is None
    assert parse_config({"tls": None}).tls is None


def test_tls_section_names_three_files_and_requires_client_certificates_by_default() -> None:
    files = {"cert_file": "/etc/tls/tls.crt", "key_file": "/etc/tls/tls.key", "ca_file": "/etc/tls/ca.crt"}
    tls = parse_config({"tls": files}).tls
    assert tls == TlsConfig(**files, require_client_cert=True)
    with pytest.raises(ConfigError) as missing:
        parse_config({"tls": {"cert_file": "/etc/tls/tls.crt", "key_file": " "}})
    assert str(missing.value).splitlines() == [
        "<config>: tls.key_file: must be the path of a PEM file",
        "<config>: tls.ca_file: required key is missing",
    ]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("Agentmesh-RR.agentmesh.svc.cluster.local", "agentmesh-rr.agentmesh.svc.cluster.local"),
        ("*.agentmesh-client.agentmesh.svc", "*.agentmesh-client.agentmesh.svc"),
        ("10.0.0.1", "10.0.0.1"),
        ("0:0::1", "::1"),
    ],
)
def test_tls_name_is_a_name_an_address_or_a_leftmost_wildcard(given: str, canonical: str) -> None:
    assert check_tls_name(given) == canonical
    config = parse_config(with_neighbors(neighbor(tls_name=given, passive=True)))
    assert config.neighbors[0].tls_name == canonical


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("a.*.mesh.test", "a wildcard must be the whole leftmost label"),
        ("node*.mesh.test", "a wildcard must be the whole leftmost label"),
        ("*.test", "a wildcard must be followed by at least two labels"),
        ("no spaces.test", "is not a valid host name"),
        ("10.0.0", "is not a valid IPv4 address"),
    ],
)
def test_bad_tls_names_are_refused(given: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"neighbors\[0\]\.tls_name: .*{message}"):
        parse_config(with_neighbors(neighbor(tls_name=given, passive=True)))


def test_a_wildcard_tls_name_needs_a_passive_neighbour() -> None:
    with pytest.raises(ConfigError, match=r"neighbors\[0\]\.tls_name: .* set passive: true"):
        parse_config(with_neighbors(neighbor(tls_name="*.mesh.example.com")))


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: file not found$"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read file"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: the configuration is empty"):
        load_config(path)


def test_explicit_null_document(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the configuration is empty"):
        load_config(write(tmp_path, "null\n"))


def test_non_mapping_file(tmp_path: Path) -> None:
    path = write(tmp_path, "- node\n- timers\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:1: the configuration must be a mapping .*, got list$"
    ):
        load_config(path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  name: a\n  asn: [65001\ntimers: {}\n", name="broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml:4: YAML syntax error: .*\(column \d+\)"):
        load_config(path)


def test_yaml_bad_indentation_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  name: a\n asn: 65001\n", name="indent.yaml")
    with pytest.raises(ConfigError, match=r"indent\.yaml:3: YAML syntax error"):
        load_config(path)


def test_several_yaml_documents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.yaml:\d+: YAML syntax error: .*single document"):
        load_config(write(tmp_path, "node: {}\n---\nnode: {}\n"))


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "neighbors:\n  - address: 127.0.0.1:50052\n    asn: 65002\n    asn: 65003\n",
    )
    with pytest.raises(
        ConfigError, match=r"node\.yaml:4: neighbors\[0\]\.asn: duplicate key \(first given on line 3\)$"
    ):
        load_config(path)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_bytes(b"node:\n  name: \xff\n")
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte offset 14\)"):
        load_config(path)


def test_validation_errors_in_files_carry_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
node:
  name: node-a
  asn: 65001
neighbors:
  - address: 127.0.0.1:50052
    asn: 65002
  - address: 127.0.0.1:50053
    asn: 23456
    colour: blue
  - description: no address
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = [(p.line, p.location) for p in caught.value.problems]
    assert lines == [
        (8, "neighbors[1].asn"),
        (9, "neighbors[1].colour"),
        (10, "neighbors[2].address"),
        (10, "neighbors[2].asn"),
    ]
    assert str(caught.value).splitlines()[0].startswith(f"{path}:8: neighbors[1].asn: AS 23456 is AS_TRANS")


def test_yaml_scalars_that_look_like_strings_are_not_coerced(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  name: no\ntimers:\n  hold_time: 90s\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).splitlines() == [
        f"{path}:2: node.name: expected a string, got bool False"
        " (quote the value in YAML to make it a string)",
        f"{path}:4: timers.hold_time: expected an integer, got str '90s'",
    ]


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("name", "asn", "port", "neighbors"),
    [
        ("a", 65001, 50051, [("127.0.0.1:50052", 65002), ("127.0.0.1:50053", 65003)]),
        ("b", 65002, 50052, [("127.0.0.1:50051", 65001), ("127.0.0.1:50053", 65003)]),
        ("c", 65003, 50053, [("127.0.0.1:50051", 65001), ("127.0.0.1:50052", 65002)]),
    ],
)
def test_three_node_example(name: str, asn: int, port: int, neighbors: list[tuple[str, int]]) -> None:
    config = load_config(EXAMPLES / f"{name}.yaml")
    assert config.node.name == f"node-{name}"
    assert config.node.asn == asn
    assert config.node.listen == config.node.advertise_address == f"127.0.0.1:{port}"
    assert [(n.address, n.asn) for n in config.neighbors] == neighbors
    assert not any(config.is_internal(n) or n.passive for n in config.neighbors)
    # Round trip: dumping and re-validating gives the same configuration.
    assert parse_config(config.model_dump()) == config


def test_three_node_example_is_a_full_mesh() -> None:
    configs = [load_config(path) for path in sorted(EXAMPLES.glob("*.yaml"))]
    assert len(configs) == 3
    nodes = {c.node.advertise_address: c.node.asn for c in configs}
    assert len({c.node.router_id for c in configs}) == 3
    for config in configs:
        expected = {a: asn for a, asn in nodes.items() if a != config.node.advertise_address}
        assert {n.address: n.asn for n in config.neighbors} == expected


# --------------------------------------------------------------------------- documentation

_DOC_KEY_CELL = re.compile(r"^\|([^|\n]*`[^|\n]*)\|", re.MULTILINE)
_BACKTICKED = re.compile(r"`([^`]+)`")
#: Sections with a reference of their own; configuration.md documents only their top-level key.
_SECTION_DOCS = {"policy.": "policy.md", "access.": "access-control.md"}
_SECTION_KEYS = (
    "neighbors[].import_policy.",
    "neighbors[].export_policy.",
    "dynamic_neighbors[].import_policy.",
    "dynamic_neighbors[].export_policy.",
)


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of the YAML (aliases as written), `[]` marking a list of mappings."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        keys.add(key)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _model_keys(annotation, key + ".")
        args = typing.get_args(annotation)
        optional = type(None) in args  # `Model | None` is a mapping, not a list of them
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys |= _model_keys(arg, key + ("." if optional else "[]."))
    return keys


def _table_keys(path: Path) -> set[str]:
    """Keys in the first cell of the doc's tables (a cell may name several: `a`, `b`)."""
    text = path.read_text(encoding="utf-8")
    return {key for cell in _DOC_KEY_CELL.findall(text) for key in _BACKTICKED.findall(cell)}


def _documented_keys() -> set[str]:
    return _table_keys(DOCS)


def _owning_doc(key: str) -> Path | None:
    """The doc that must describe `key` when it belongs to a section with its own reference."""
    if key.startswith(_SECTION_KEYS):
        return DOCS.parent / "policy.md"
    for prefix, doc in _SECTION_DOCS.items():
        if key.startswith(prefix):
            return DOCS.parent / doc
    return None


def test_model_keys_helper_sees_every_model() -> None:
    keys = _model_keys(Config)
    assert {"node.router_id", "timers.hold_time", "neighbors[].passive", "policy.import"} <= keys
    assert "neighbors[].import_policy.default" in keys and "policy.import_" not in keys
    models = (
        Config,
        NodeConfig,
        TimersConfig,
        NeighborConfig,
        DynamicNeighborConfig,
        McpConfig,
        AdminConfig,
        MetricsConfig,
        MaxPrefixesConfig,
        MaxPrefixesConfig,  # twice: under neighbors[] and under dynamic_neighbors[]
        GracefulRestartConfig,
        DampingConfig,
        ForwardingConfig,
        BackendConfig,
        HealthConfig,
        LocalFunctionConfig,
        TlsConfig,
    )
    outside_sections = {k for k in keys if _owning_doc(k) is None}
    assert len(outside_sections) == sum(len(m.model_fields) for m in models)


def test_every_config_key_is_documented() -> None:
    keys = _model_keys(Config)
    missing = {k for k in keys if _owning_doc(k) is None} - _documented_keys()
    assert not missing, f"keys missing from the table in {DOCS.name}: {sorted(missing)}"


def test_keys_of_sections_with_their_own_reference_are_documented_there() -> None:
    """A full key in a table row, or its last part named in the text (condition and action tables)."""
    for key in _model_keys(Config):
        doc = _owning_doc(key)
        if doc is None:
            continue
        leaf = key.rsplit(".", 1)[-1].removesuffix("[]")
        text = doc.read_text(encoding="utf-8")
        described = key in _table_keys(doc) or re.search(rf"\b{re.escape(leaf)}\b", text) is not None
        assert described, f"{key} is not described in {doc.name}"


def test_every_documented_key_exists() -> None:
    known = _model_keys(Config)
    unknown = _documented_keys() - known
    assert not unknown, f"{DOCS.name} documents keys the configuration does not have: {sorted(unknown)}"
    policy_keys = {
        k for k in _table_keys(DOCS.parent / "policy.md") if k.startswith(("policy", "neighbors[]"))
    }
    assert not policy_keys - known, f"policy.md documents unknown keys: {sorted(policy_keys - known)}"


def test_documentation_full_example_is_valid() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Full example", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)), source="docs/configuration.md")
    # The full example spells out every key.
    assert {f"node.{k}" for k in config.node.model_fields_set} == {
        k for k in _model_keys(Config) if k.startswith("node.")
    }
    assert {f"timers.{k}" for k in config.timers.model_fields_set} == {
        k for k in _model_keys(Config) if k.startswith("timers.")
    }
    used = set().union(*(n.model_fields_set for n in config.neighbors))
    assert {f"neighbors[].{k}" for k in used} == {
        k
        for k in _model_keys(Config)
        if k.startswith("neighbors[].")
        and "." not in k.removeprefix("neighbors[].")
        and _owning_doc(k) is None
    }


def test_mcp_listen_defaults_to_off_and_is_checked() -> None:
    assert Config().mcp.listen is None
    assert parse_config({"mcp": {"listen": "127.0.0.1:0"}}).mcp.listen == "127.0.0.1:0"
    with pytest.raises(ConfigError, match=r"mcp\.listen"):
        parse_config({"mcp": {"listen": "no-port"}})
    with pytest.raises(ConfigError, match=r"mcp\.port"):
        parse_config({"mcp": {"port": 8080}})


def test_agent_backends_are_checked_against_their_type() -> None:
    config = parse_config(
        {
            "agents": [
                {"type": "demo", "namespace": "demo", "agents": ["echo"]},
                {"type": "mastra", "namespace": "weather", "url": "http://127.0.0.1:4111"},
                {
                    "type": "local",
                    "namespace": "tools",
                    "functions": [{"id": "greet", "function": "pkg.mod:greet"}],
                },
            ]
        }
    )
    assert [b.type for b in config.agents] == ["demo", "mastra", "local"]
    with pytest.raises(ConfigError, match=r"agents\[0\]\.type: .*unknown backend type 'ftp'"):
        parse_config({"agents": [{"type": "ftp", "namespace": "x"}]})
    with pytest.raises(ConfigError, match=r"agents\[0\]\.url: required for a mastra backend"):
        parse_config({"agents": [{"type": "mastra", "namespace": "x"}]})
    with pytest.raises(ConfigError, match=r"agents\[0\]\.url: not used by a demo backend"):
        parse_config({"agents": [{"type": "demo", "namespace": "x", "url": "http://h:1"}]})
    with pytest.raises(ConfigError, match=r"agents\[0\]\.namespace: .*dotted labels"):
        parse_config({"agents": [{"type": "demo", "namespace": "bad name"}]})
    with pytest.raises(ConfigError, match=r"functions\[0\]\.function: .*'module:function'"):
        parse_config(
            {
                "agents": [
                    {"type": "local", "namespace": "t", "functions": [{"id": "a", "function": "nocolon"}]}
                ]
            }
        )
    with pytest.raises(ConfigError, match=r"agents\[0\]\.url: .*http"):
        parse_config({"agents": [{"type": "mastra", "namespace": "w", "url": "ftp://x"}]})


def test_mcp_backends_need_exactly_one_of_command_and_url() -> None:
    config = parse_config({"agents": [{"type": "mcp", "namespace": "t", "command": ["python", "server.py"]}]})
    assert config.agents[0].command == ("python", "server.py")
    with pytest.raises(ConfigError, match=r"agents\[0\]\.command: an mcp backend needs exactly one"):
        parse_config({"agents": [{"type": "mcp", "namespace": "t"}]})
    with pytest.raises(ConfigError, match=r"agents\[0\]\.command: an mcp backend needs exactly one"):
        parse_config(
            {"agents": [{"type": "mcp", "namespace": "t", "command": ["x"], "url": "http://h:1/mcp"}]}
        )
    with pytest.raises(ConfigError, match=r"agents\[0\]\.command: not used by a mastra backend"):
        parse_config(
            {"agents": [{"type": "mastra", "namespace": "t", "url": "http://h:1", "command": ["x"]}]}
        )


def test_admin_api_defaults_to_localhost_without_a_token() -> None:
    admin = Config().admin
    assert (admin.enabled, admin.listen, admin.read_token()) == (True, "127.0.0.1:50050", None)
    assert parse_config({"admin": {"listen": "[::1]:0"}}).admin.listen == "[::1]:0"


def test_admin_api_off_loopback_requires_a_token() -> None:
    with pytest.raises(ConfigError, match=r"admin\.listen: 0\.0\.0\.0:50050 is reachable from other hosts"):
        parse_config({"admin": {"listen": "0.0.0.0:50050"}})
    token = "t" * 16
    assert parse_config({"admin": {"listen": "0.0.0.0:50050", "token": token}}).admin.read_token() == token
    # Disabled, it listens nowhere, so it needs nothing.
    assert not parse_config({"admin": {"enabled": False, "listen": "0.0.0.0:1"}}).admin.enabled


def test_admin_token_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"admin\.token: .*at least 16 characters"):
        parse_config({"admin": {"token": "short"}})
    with pytest.raises(ConfigError, match=r"admin\.token_file: give token or token_file, not both"):
        parse_config({"admin": {"token": "t" * 16, "token_file": "/x"}})
    secret = tmp_path / "token"
    secret.write_text("  " + "s" * 20 + "\n")
    assert parse_config({"admin": {"token_file": str(secret)}}).admin.read_token() == "s" * 20
    secret.write_text("short\n")
    with pytest.raises(OSError, match="fewer than 16 characters"):
        parse_config({"admin": {"token_file": str(secret)}}).admin.read_token()


def test_metrics_and_readiness_settings() -> None:
    assert Config().metrics.listen is None and Config().timers.readiness_timeout == 30.0
    assert parse_config({"metrics": {"listen": "127.0.0.1:0"}}).metrics.listen == "127.0.0.1:0"
    with pytest.raises(ConfigError, match=r"timers\.readiness_timeout"):
        parse_config({"timers": {"readiness_timeout": 0}})
