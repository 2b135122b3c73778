"""Node configuration: one YAML file, validated up front with precise errors.

A node's whole configuration is one YAML document with these sections::

    node:       who this node is (name, ASN, router id) and where it listens
    timers:     BGP session timers (RFC 4271 §4.2, §10) and the readiness timeout
    neighbors:  the peers this node sessions with (by address, or by a DNS name: one session per address)
    dynamic_neighbors: address ranges whose peers are accepted without being configured one by one
    mcp:        the MCP front-end over HTTP
    admin:      the AdminService gRPC endpoint
    metrics:    the Prometheus /metrics endpoint
    tls:        TLS and mutual TLS on the peering port and to other nodes (docs/security.md)
    policy:     routing policy: defined sets, policies, import/export assignments (docs/policy.md)
    access:     who may call what: callers at the MCP front-end, call policy at the origin
    agents:     the backends whose agents this node hosts

Every key is optional except a neighbour's ``address`` and ``asn``: ``parse_config({})``
(and ``Config()``) give a working single-node configuration, with the router id derived
from the node name and the ASN derived from the router id, so a node can run with no
YAML at all.

Design choices worth knowing:

* Validation is strict (DESIGN.md §5): unknown keys are errors, not warnings, and YAML
  values are never coerced across types (``asn: "65001"`` or ``hold_time: 90s`` are
  errors, not silently converted). Duplicate keys inside one YAML mapping, which PyYAML
  would otherwise resolve silently by keeping the last one, are errors too.
* ``null`` for an optional key means "use the default", the same as leaving it out.
* Every problem found is reported, not just the first, as a ``ConfigError`` with one line
  per problem: ``<file>:<line>: <location>: <message>`` where the location is a path
  such as ``neighbors[1].asn``.
* Addresses are stored canonically (lower-case host names, compressed IPv6 in
  brackets), so other modules may compare them as strings.
* A file's string values may refer to the environment: ``${VAR}``, ``${VAR:-default}``,
  and ``$$`` for a literal ``$`` (``config_base.expand_environment``), expanded before
  validation; an unset variable without a default is a located problem like any other.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import typing
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentmesh.access_config import AccessConfig
from agentmesh.agents.health import HealthSettings, HealthSettingsError
from agentmesh.config_base import ConfigModel as _Model
from agentmesh.config_base import Problems as _Problems
from agentmesh.config_base import expand_environment
from agentmesh.policy_config import PolicyAssignment, PolicyConfig
from agentmesh.rib import names
from agentmesh.rib.damping import DampingSettings

__all__ = [
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_LISTEN",
    "AdminConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DynamicNeighborConfig",
    "MetricsConfig",
    "NeighborConfig",
    "NodeConfig",
    "TimersConfig",
    "TlsConfig",
    "check_tls_name",
    "derive_asn",
    "derive_router_id",
    "int_to_router_id",
    "is_reserved_asn",
    "join_host_port",
    "load_config",
    "parse_config",
    "router_id_to_int",
    "split_host_port",
]

DEFAULT_LISTEN = "127.0.0.1:50051"
#: The admin API's default address, also where the CLI looks first.
DEFAULT_ADMIN_LISTEN = "127.0.0.1:50050"

# RFC 6793: AS numbers are 4-octet unsigned integers.
_ASN_MAX = 0xFFFF_FFFF
# RFC 6996 §5: the 4-octet private range; derived ASNs are drawn from it.
_PRIVATE_ASN4_FIRST = 4_200_000_000
_PRIVATE_ASN4_LAST = 4_294_967_294
_PRIVATE_ASN_HINT = (
    "use a private ASN (64512-65534 or 4200000000-4294967294, RFC 6996) or one assigned to you"
)

# RFC 4271 §4.2: the Hold Time is a 2-octet field, 0 or at least 3 seconds.
_HOLD_TIME_MAX = 0xFFFF

_NAME_MAX = 253
#: The keys of a neighbour's session that a dynamic range gives each of its peers.
SESSION_KEYS = (
    "asn",
    "description",
    "hold_time",
    "import_policy",
    "export_policy",
    "route_reflector_client",
    "add_paths",
    "max_prefixes",
    "tls_name",
)
#: Most paths per name a node sends one neighbour with ADD-PATH: as many as a node can forward over.
MAX_ADD_PATHS = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_DIGITS_AND_DOTS_RE = re.compile(r"[0-9.]+")


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    ``location`` is a path into the document such as ``neighbors[1].asn`` ("" when the
    problem concerns the whole document or file); ``line`` is the 1-based line in the
    YAML file when known.
    """

    location: str
    message: str
    line: int | None = None

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        if self.location:
            return f"{where}: {self.location}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """An invalid configuration; ``str()`` gives one line per problem.

    Each line reads ``<source>[:<line>]: <location>: <message>``.
    """

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(p.format(source) for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        # The constructor's signature differs from ValueError's, so spell out pickling.
        return (type(self), (self.source, self.problems))


# --------------------------------------------------------------------------- helpers


def router_id_to_int(router_id: str) -> int:
    """Convert a dotted-quad router id to its big-endian 32-bit value."""
    try:
        return int(ipaddress.IPv4Address(router_id))
    except (ipaddress.AddressValueError, TypeError, ValueError):
        raise ValueError(f"{router_id!r} is not a dotted-quad IPv4 address (e.g. 10.0.0.1)") from None


def int_to_router_id(value: int) -> str:
    """Format a 32-bit value as a dotted-quad router id."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"{value!r} is not a 32-bit unsigned integer")
    return str(ipaddress.IPv4Address(value))


def derive_router_id(name: str) -> str:
    """Derive a stable router id from a node name: its CRC-32, never 0.0.0.0."""
    # RFC 6286 §2.1: the BGP Identifier is any non-zero 4-octet value.
    return int_to_router_id(zlib.crc32(name.encode("utf-8")) or 1)


def derive_asn(router_id: str) -> int:
    """Derive a stable ASN from a router id, in the 4-octet private range (RFC 6996)."""
    span = _PRIVATE_ASN4_LAST - _PRIVATE_ASN4_FIRST + 1
    return _PRIVATE_ASN4_FIRST + zlib.crc32(router_id.encode("utf-8")) % span


def is_reserved_asn(asn: int) -> str | None:
    """Return why ``asn`` must not be used as a node's or neighbour's ASN, or None.

    Values outside the 32-bit AS number space are reported too, so ``None`` always
    means "usable".
    """
    if asn < 0 or asn > _ASN_MAX:
        return "outside the 32-bit AS number space 0..4294967295 (RFC 6793)"
    if asn == 0:
        return "AS 0 is reserved and must not be used in BGP (RFC 7607)"
    if asn == 23456:
        return "AS 23456 is AS_TRANS, reserved as the 2-octet stand-in for 4-octet ASNs (RFC 6793)"
    if 64496 <= asn <= 64511:
        return "AS 64496-64511 are reserved for documentation (RFC 5398)"
    if 65536 <= asn <= 65551:
        return "AS 65536-65551 are reserved for documentation (RFC 5398)"
    if asn == 65535:
        return "AS 65535, the last 16-bit ASN, is reserved (RFC 7300)"
    if asn == _ASN_MAX:
        return "AS 4294967295, the last 32-bit ASN, is reserved (RFC 7300)"
    if 65552 <= asn <= 131071:
        return "AS 65552-131071 are reserved by IANA"
    return None


def _check_host(host: str) -> str:
    """Validate an IPv4 address or DNS name and return its canonical form."""
    if _DIGITS_AND_DOTS_RE.fullmatch(host):
        # RFC 1123 §2.1: an all-numeric name is an IPv4 address, never a host name.
        try:
            return str(ipaddress.IPv4Address(host))
        except ipaddress.AddressValueError:
            raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    if len(host) > 253:
        raise ValueError(f"host name {host[:20]!r}... is longer than 253 characters")
    for label in host.split("."):
        if len(label) > 63 or not _HOST_LABEL_RE.fullmatch(label):
            raise ValueError(
                f"{host!r} is not a valid host name (dot-separated labels of letters,"
                " digits and '-', at most 63 characters each)"
            )
    return host.lower()


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[ipv6]:port``) into a canonical host and a port.

    IPv6 addresses must be bracketed; the returned host has no brackets. Port 0 is
    accepted here (it means "OS-chosen" for a listen address); callers that dial
    reject it themselves. Raises ValueError with a readable message.
    """
    if not isinstance(address, str):
        raise ValueError(f"expected a host:port string, got {type(address).__name__}")
    if not address:
        raise ValueError("empty address: expected host:port, e.g. 127.0.0.1:50051")
    if address != address.strip():
        raise ValueError(f"{address!r} has leading or trailing whitespace")
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"{address!r} is missing the ']' closing the IPv6 address")
        raw_host, rest = address[1:end], address[end + 1 :]
        try:
            host = str(ipaddress.IPv6Address(raw_host))
        except ipaddress.AddressValueError:
            raise ValueError(f"{raw_host!r} in {address!r} is not a valid IPv6 address") from None
        if not rest:
            raise ValueError(f"{address!r} is missing a port (expected [host]:port, e.g. [::1]:50051)")
        if not rest.startswith(":"):
            raise ValueError(f"{address!r}: expected ':port' after ']'")
        port_text = rest[1:]
    else:
        raw_host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(f"{address!r} is missing a port (expected host:port, e.g. 127.0.0.1:50051)")
        if ":" in raw_host:
            raise ValueError(f"{address!r}: an IPv6 address must be written in brackets, e.g. [::1]:50051")
        if not raw_host:
            raise ValueError(f"{address!r} is missing a host (expected host:port)")
        host = _check_host(raw_host)
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"{address!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{address!r}: port {port} is out of range 0..65535")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`: bracket IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _canonical_address(value: str, *, allow_port_zero: bool, allow_wildcard: bool) -> str:
    host, port = split_host_port(value)
    if port == 0 and not allow_port_zero:
        raise ValueError(f"{value!r}: port 0 cannot be dialled; use a port in 1..65535")
    if not allow_wildcard and _is_wildcard(host):
        raise ValueError(
            f"{value!r}: {host} is a wildcard address that cannot be dialled;"
            " give the address neighbours should connect to"
        )
    return join_host_port(host, port)


def _check_asn(asn: int) -> int:
    if asn < 0 or asn > _ASN_MAX:
        raise ValueError(
            f"ASN {asn} is out of range: AS numbers are 32-bit unsigned integers (0..4294967295, RFC 6793)"
        )
    reason = is_reserved_asn(asn)
    if reason is not None:
        raise ValueError(f"{reason}; {_PRIVATE_ASN_HINT}")
    return asn


def _positive_seconds(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0 seconds, got {value:g}")
    return value


def _check_hold_time(value: int) -> int:
    if value < 0:
        raise ValueError(f"hold time {value} is negative")
    if value in (1, 2):
        raise ValueError(
            f"hold time {value} is invalid: it must be 0 (no keepalives) or at least"
            " 3 seconds (RFC 4271 §4.2)"
        )
    if value > _HOLD_TIME_MAX:
        raise ValueError(
            f"hold time {value} exceeds 65535, the largest value of the 2-octet"
            " Hold Time field (RFC 4271 §4.2)"
        )
    return value


def check_tls_name(value: str) -> str:
    """Validate the identity expected of a peer's certificate; return its canonical form.

    An IP address, a DNS name, or a DNS name whose leftmost label is a wildcard `*` standing for
    exactly one label (RFC 6125 §6.4.3), followed by at least two labels so that it cannot cover a
    whole top-level domain.
    """
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.split(".")
    if "*" in value:
        if labels[0] != "*" or "*" in ".".join(labels[1:]):
            raise ValueError(
                f"{value!r}: a wildcard must be the whole leftmost label, as in '*.mesh.example.com'"
                " (RFC 6125 §6.4.3)"
            )
        if len(labels) < 3:
            raise ValueError(f"{value!r}: a wildcard must be followed by at least two labels")
        return "*." + _check_host(".".join(labels[1:]))
    return _check_host(value)


def _default_name() -> str:
    # Host names may contain characters a node name does not allow; keep the default
    # valid whatever the host is called.
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")
    return name[:_NAME_MAX] or "agentmesh"


# Default factories run after the fields before them validated (pydantic >= 2.10), so
# a derived value is always computed from validated input. If that input was invalid,
# pydantic does not call the factory and reports "default_factory_not_called", which
# the error conversion drops as a mere consequence of the real problem.
def _default_router_id(data: dict[str, Any]) -> str:
    return derive_router_id(data["name"])


def _default_asn(data: dict[str, Any]) -> int:
    return derive_asn(data["router_id"])


def _default_advertise_address(data: dict[str, Any]) -> str:
    listen: str = data["listen"]
    return listen


# --------------------------------------------------------------------------- models


class TimersConfig(_Model):
    """BGP session timers, in seconds (RFC 4271 §4.2, §10)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hold_time: StrictInt = 90
    keepalive_time: StrictInt | None = None
    connect_retry_time: StrictFloat = Field(default=120.0, allow_inf_nan=False)
    connect_retry_initial: StrictFloat = Field(default=1.0, allow_inf_nan=False)
    min_advertisement_interval: StrictFloat = Field(default=0.1, allow_inf_nan=False)
    readiness_timeout: StrictFloat = Field(default=30.0, allow_inf_nan=False)
    #: Seconds between DNS resolutions of the neighbours given by name.
    resolve_interval: StrictFloat = Field(default=30.0, allow_inf_nan=False)
    #: Seconds calls in flight get to finish when the node stops, after its peers were sent Cease.
    drain_time: StrictFloat | None = Field(default=None, allow_inf_nan=False)

    @field_validator("min_advertisement_interval", "drain_time")
    @classmethod
    def _not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must be 0 or more seconds, got {value:g}")
        return value

    @field_validator("hold_time")
    @classmethod
    def _valid_hold_time(cls, value: int) -> int:
        return _check_hold_time(value)

    @field_validator("connect_retry_time", "connect_retry_initial", "readiness_timeout", "resolve_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        return _positive_seconds(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        keepalive = self.keepalive_time
        if keepalive is not None:
            if self.hold_time == 0 and keepalive != 0:
                problems.append(
                    (
                        ("keepalive_time",),
                        f"must be 0 or null when hold_time is 0 (no keepalives), got {keepalive}",
                    )
                )
            elif self.hold_time > 0 and not 1 <= keepalive < self.hold_time:
                problems.append(
                    (
                        ("keepalive_time",),
                        f"keepalive time {keepalive} must be at least 1 and less than the"
                        f" hold time {self.hold_time}; RFC 4271 §10 suggests a third of it",
                    )
                )
        if self.connect_retry_initial > self.connect_retry_time:
            problems.append(
                (
                    ("connect_retry_initial",),
                    f"{self.connect_retry_initial:g} must not exceed connect_retry_time"
                    f" ({self.connect_retry_time:g}), the cap of the retry backoff",
                )
            )
        if problems:
            raise _Problems(problems)
        return self

    @property
    def effective_keepalive_time(self) -> int:
        """The KEEPALIVE interval: ``keepalive_time`` if set, else a third of the hold time."""
        if self.hold_time == 0:
            return 0
        if self.keepalive_time is not None:
            return self.keepalive_time
        return self.hold_time // 3


class MaxPrefixesConfig(_Model):
    """A bound on the routes one neighbour may send (RFC 4486 §4: Cease/Maximum Number of Prefixes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: StrictInt
    warning_percent: StrictInt = 75
    restart_after: StrictFloat | None = Field(default=None, allow_inf_nan=False)

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("warning_percent")
    @classmethod
    def _percent(cls, value: int) -> int:
        if not 1 <= value <= 100:
            raise ValueError(f"must be 1-100 (percent of the limit), got {value}")
        return value

    @field_validator("restart_after")
    @classmethod
    def _positive_restart(cls, value: float | None) -> float | None:
        return None if value is None else _positive_seconds(value)


class _SessionChecks(_Model):
    """The checks of the keys a neighbour's session is made with, which configured neighbours and
    dynamic ranges share (`SESSION_KEYS`).

    Each subclass declares those fields itself, so that its own keys keep their place among them
    (errors are reported in field order); the checks and `session_key_values` are written once, here.
    """

    @field_validator("asn", check_fields=False)
    @classmethod
    def _valid_asn(cls, value: int) -> int:
        return _check_asn(value)

    @field_validator("hold_time", check_fields=False)
    @classmethod
    def _valid_hold_time(cls, value: int | None) -> int | None:
        return None if value is None else _check_hold_time(value)

    @field_validator("add_paths", check_fields=False)
    @classmethod
    def _valid_add_paths(cls, value: int) -> int:
        if not 0 <= value <= MAX_ADD_PATHS:
            raise ValueError(f"must be 0-{MAX_ADD_PATHS} paths per name, got {value}")
        return value

    @field_validator("tls_name", check_fields=False)
    @classmethod
    def _valid_tls_name(cls, value: str | None) -> str | None:
        return None if value is None else check_tls_name(value)

    def session_key_values(self) -> dict[str, Any]:
        """The session keys' values, as keyword arguments for another model that has them."""
        return {name: getattr(self, name) for name in SESSION_KEYS}


class NeighborConfig(_SessionChecks):
    """A configured peer. eBGP or iBGP follows from the ASNs (``Config.is_internal``)."""

    address: StrictStr
    asn: StrictInt
    description: StrictStr = ""
    passive: StrictBool = False
    hold_time: StrictInt | None = None
    import_policy: PolicyAssignment | None = None
    export_policy: PolicyAssignment | None = None
    route_reflector_client: StrictBool = False
    add_paths: StrictInt = 0
    max_prefixes: MaxPrefixesConfig | None = None
    tls_name: StrictStr | None = None

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return _canonical_address(value, allow_port_zero=False, allow_wildcard=False)

    @property
    def dns_name(self) -> str | None:
        """The host of `address` when it is a DNS name (resolved to one session per address), else None."""
        host = split_host_port(self.address)[0]
        return None if _is_ip_address(host) else host

    @model_validator(mode="after")
    def _dialled_tls_name_is_exact(self) -> Self:
        # A dialling client checks the server certificate against one name (RFC 6125 §6): a
        # wildcard can only describe the certificates of callers this node accepts.
        if self.tls_name is not None and self.tls_name.startswith("*.") and not self.passive:
            raise _Problems(
                [
                    (
                        ("tls_name",),
                        f"{self.tls_name!r} is a wildcard, which can only check neighbours that dial this"
                        " node: set passive: true, or give the exact name the neighbour's certificate"
                        " carries",
                    )
                ]
            )
        return self


class DynamicNeighborConfig(_SessionChecks):
    """A range of addresses whose peers are accepted as passive neighbours when they dial in.

    A Session whose claimed address is no configured neighbour is matched by the IP address its
    connection comes from against each range in order; the first range that contains it decides.
    Its peers only dial in, so a wildcard `tls_name` is always usable here.
    """

    prefix: StrictStr
    asn: StrictInt
    description: StrictStr = ""
    hold_time: StrictInt | None = None
    import_policy: PolicyAssignment | None = None
    export_policy: PolicyAssignment | None = None
    route_reflector_client: StrictBool = False
    add_paths: StrictInt = 0
    max_prefixes: MaxPrefixesConfig | None = None
    tls_name: StrictStr | None = None
    #: The most neighbours accepted from this range at once.
    limit: StrictInt = 100

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value))
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an address range: write an IPv4 or IPv6 prefix such as 10.0.0.0/8"
                " or fd00::/8"
            ) from None
        raise ValueError(f"{value!r} has bits set after the prefix length; did you mean {loose}?")

    @field_validator("limit")
    @classmethod
    def _positive_limit(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.prefix)


class NodeConfig(_Model):
    """This node's identity and addresses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Field order matters: each default factory reads the fields validated before it.
    name: StrictStr = Field(default_factory=_default_name)
    router_id: StrictStr = Field(default_factory=_default_router_id)
    asn: StrictInt = Field(default_factory=_default_asn)
    listen: StrictStr = DEFAULT_LISTEN
    advertise_address: StrictStr = Field(default_factory=_default_advertise_address)
    cluster_id: StrictStr | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if len(value) > _NAME_MAX:
            raise ValueError(f"is {len(value)} characters long; the limit is {_NAME_MAX}")
        if not _NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} may contain only letters, digits, '.', '_' and '-',"
                " and must start with a letter or digit"
            )
        return value

    @field_validator("cluster_id")
    @classmethod
    def _valid_cluster_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        number = router_id_to_int(value)
        if number == 0:
            raise ValueError("0.0.0.0 is not a valid cluster id (RFC 4456 §7 uses a non-zero 4-octet value)")
        return int_to_router_id(number)

    @field_validator("router_id")
    @classmethod
    def _valid_router_id(cls, value: str) -> str:
        number = router_id_to_int(value)
        if number == 0:
            # RFC 6286 §2.1: the BGP Identifier is a non-zero 4-octet value.
            raise ValueError("0.0.0.0 is not a valid router id: it must be non-zero (RFC 6286 §2.1)")
        return int_to_router_id(number)

    @field_validator("asn")
    @classmethod
    def _valid_asn(cls, value: int) -> int:
        return _check_asn(value)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        return _canonical_address(value, allow_port_zero=True, allow_wildcard=True)

    @field_validator("advertise_address")
    @classmethod
    def _valid_advertise_address(cls, value: str) -> str:
        # Port 0 is checked against `listen` in _consistent: it is only meaningful
        # when the listen port is OS-chosen too.
        return _canonical_address(value, allow_port_zero=True, allow_wildcard=False)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        listen_host, listen_port = split_host_port(self.listen)
        _, advertise_port = split_host_port(self.advertise_address)
        if "advertise_address" not in self.model_fields_set:
            if _is_wildcard(listen_host):
                raise _Problems(
                    [
                        (
                            ("advertise_address",),
                            f"required because listen ({self.listen}) binds a wildcard"
                            " address that neighbours cannot dial; set the host:port"
                            " they should connect to",
                        )
                    ]
                )
        elif advertise_port == 0 and listen_port != 0:
            raise _Problems(
                [
                    (
                        ("advertise_address",),
                        f"{self.advertise_address!r}: port 0 is only allowed when the"
                        " listen port is 0 too (it then means the port the server binds)",
                    )
                ]
            )
        return self


_FUNCTION_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
BACKEND_TYPES = ("demo", "local", "mastra", "mcp", "a2a")


class LocalFunctionConfig(_Model):
    """A Python callable served as an agent by a `local` backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr
    function: StrictStr
    description: StrictStr = ""
    capabilities: tuple[StrictStr, ...] = ()
    input_schema: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if "." in value or not names.is_valid(value):
            raise ValueError(f"{value!r} must be one name label: letters, digits, '_' and '-'")
        return value

    @field_validator("function")
    @classmethod
    def _valid_function(cls, value: str) -> str:
        if not _FUNCTION_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be 'module:function', e.g. 'my_agents.weather:forecast'")
        return value


class HealthConfig(_Model):
    """Health monitoring of one backend (docs/health.md): probes, passive ejection, MED, hysteresis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe_every: StrictFloat = Field(default=10.0, allow_inf_nan=False)
    probe_timeout: StrictFloat = Field(default=5.0, allow_inf_nan=False)
    failures_to_withdraw: StrictInt = 3
    successes_to_recover: StrictInt = 2
    #: 0: never eject.
    failures_to_eject: StrictInt = 5
    ejection_time: StrictFloat = Field(default=30.0, allow_inf_nan=False)
    max_ejection_time: StrictFloat = Field(default=300.0, allow_inf_nan=False)
    capacity: StrictInt = 10
    error_window: StrictFloat = Field(default=60.0, allow_inf_nan=False)
    degraded_error_rate: StrictFloat = Field(default=0.2, allow_inf_nan=False)
    latency_smoothing: StrictFloat = Field(default=0.3, allow_inf_nan=False)
    med_base: StrictInt = 0
    med_min_change: StrictInt = 10
    med_min_ratio: StrictFloat = Field(default=0.2, allow_inf_nan=False)
    settle: StrictInt = 3

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            self.settings()
        except HealthSettingsError as error:
            raise _Problems([((name,), message) for name, message in error.problems]) from None
        return self

    def settings(self) -> HealthSettings:
        return HealthSettings(**self.model_dump())


class BackendConfig(_Model):
    """Where a node's agents come from; each is announced as `namespace.<agent id>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: StrictStr
    namespace: StrictStr
    rediscover_every: StrictFloat = Field(default=30.0, allow_inf_nan=False)
    agents: tuple[StrictStr, ...] = ()
    functions: tuple[LocalFunctionConfig, ...] = ()
    url: StrictStr | None = None
    command: tuple[StrictStr, ...] = ()
    #: A local backend's probe function, `module:function` (docs/health.md).
    probe: StrictStr | None = None
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in BACKEND_TYPES:
            raise ValueError(f"unknown backend type {value!r}; known: {', '.join(BACKEND_TYPES)}")
        return value

    @field_validator("namespace")
    @classmethod
    def _valid_namespace(cls, value: str) -> str:
        # The namespace is the front of every agent name, so it follows the name grammar (not an aggregate).
        if names.is_aggregate(value) or not names.is_valid(value):
            raise ValueError(f"{value!r} must be dotted labels of letters, digits, '_' and '-'")
        return value

    @field_validator("rediscover_every")
    @classmethod
    def _positive(cls, value: float) -> float:
        return _positive_seconds(value)

    @field_validator("probe")
    @classmethod
    def _valid_probe(cls, value: str | None) -> str | None:
        if value is not None and not _FUNCTION_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be 'module:function', e.g. 'my_agents.health:check'")
        return value

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> Self:
        needs = {"demo": set(), "local": {"functions"}, "mastra": {"url"}, "mcp": set(), "a2a": {"url"}}[
            self.type
        ]
        optional = {"demo": {"agents"}, "mcp": {"url", "command"}, "local": {"probe"}}.get(self.type, set())
        given = {key for key in ("agents", "functions", "url", "command", "probe") if getattr(self, key)}
        problems = [((key,), f"required for a {self.type} backend") for key in sorted(needs - given)]
        problems += [
            ((key,), f"not used by a {self.type} backend") for key in sorted(given - needs - optional)
        ]
        if self.type == "mcp" and len(given & {"url", "command"}) != 1:
            problems.append(
                (("command",), "an mcp backend needs exactly one of command (stdio) and url (HTTP)")
            )
        if self.url is not None and not re.match(r"https?://[^/]", self.url):
            problems.append((("url",), f"{self.url!r} must be an http:// or https:// URL"))
        if problems:
            raise _Problems(problems)
        return self


class _OptionalEndpoint(_Model):
    """An HTTP endpoint that is off unless `listen` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: StrictStr | None = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _canonical_address(value, allow_port_zero=True, allow_wildcard=True)


class McpConfig(_OptionalEndpoint):
    """The MCP front-end over HTTP (Streamable HTTP on /mcp, legacy SSE on /mcp/sse, /health, /status)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address, IPv6 possibly in brackets) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


class DampingConfig(_Model):
    """Route flap damping of routes from external peers (RFC 2439); defaults as in docs/damping.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = False
    half_life: StrictFloat = Field(default=900.0, allow_inf_nan=False)
    reuse_threshold: StrictFloat = Field(default=750.0, allow_inf_nan=False)
    suppress_threshold: StrictFloat = Field(default=2000.0, allow_inf_nan=False)
    max_suppress_time: StrictFloat = Field(default=3600.0, allow_inf_nan=False)
    withdrawal_penalty: StrictFloat = Field(default=1000.0, allow_inf_nan=False)
    change_penalty: StrictFloat = Field(default=500.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            self.settings()
        except ValueError as error:
            raise _Problems([((), str(error))]) from None
        return self

    def settings(self) -> DampingSettings:
        return DampingSettings(
            half_life=self.half_life,
            reuse_threshold=self.reuse_threshold,
            suppress_threshold=self.suppress_threshold,
            max_suppress_time=self.max_suppress_time,
            withdrawal_penalty=self.withdrawal_penalty,
            change_penalty=self.change_penalty,
        )


class ForwardingConfig(_Model):
    """How calls are forwarded: multipath over equally good paths."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maximum_paths: StrictInt = 1
    strategy: StrictStr = "round_robin"
    med_tolerance: StrictInt = 0

    @field_validator("med_tolerance")
    @classmethod
    def _tolerance(cls, value: int) -> int:
        if not 0 <= value <= 2**32 - 1:
            raise ValueError(f"must be 0-4294967295 (a MED difference), got {value}")
        return value

    @field_validator("maximum_paths")
    @classmethod
    def _paths(cls, value: int) -> int:
        if not 1 <= value <= 64:
            raise ValueError(f"must be 1-64, got {value}")
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        known = ("round_robin", "least_outstanding", "power_of_two", "weighted_health")
        if value not in known:
            raise ValueError(f"{value!r} is not one of {', '.join(known)}")
        return value


class GracefulRestartConfig(_Model):
    """Graceful restart (RFC 4724): keep a restarting peer's routes while it comes back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = False
    restart_time: StrictInt = 120
    stale_routes_time: StrictFloat = Field(default=360.0, allow_inf_nan=False)

    @field_validator("restart_time")
    @classmethod
    def _twelve_bits(cls, value: int) -> int:
        if not 1 <= value <= 4095:
            raise ValueError(f"must be 1-4095 seconds (a 12-bit field, RFC 4724 §3), got {value}")
        return value

    @field_validator("stale_routes_time")
    @classmethod
    def _positive(cls, value: float) -> float:
        return _positive_seconds(value)


class TlsConfig(_Model):
    """TLS on the peering port and on every channel to other nodes (docs/security.md).

    The files are read when the node starts (and again whenever they change on disk), not here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: StrictStr
    key_file: StrictStr
    ca_file: StrictStr
    require_client_cert: StrictBool = True

    @field_validator("cert_file", "key_file", "ca_file")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be the path of a PEM file")
        return value


class AdminConfig(_Model):
    """The AdminService gRPC endpoint: localhost by default; anywhere else only with a token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = True
    listen: StrictStr = DEFAULT_ADMIN_LISTEN
    token: StrictStr | None = None
    token_file: StrictStr | None = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        return _canonical_address(value, allow_port_zero=True, allow_wildcard=True)

    @field_validator("token")
    @classmethod
    def _valid_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters; a short token is guessable")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.token is not None and self.token_file is not None:
            raise _Problems([(("token_file",), "give token or token_file, not both")])
        host = split_host_port(self.listen)[0]
        if self.enabled and not is_loopback(host) and self.token is None and self.token_file is None:
            raise _Problems(
                [
                    (
                        ("listen",),
                        f"{self.listen} is reachable from other hosts: set admin.token or admin.token_file"
                        " (or listen on 127.0.0.1)",
                    )
                ]
            )
        return self

    def read_token(self) -> str | None:
        """The token clients must present, read from `token_file` when that is how it is given."""
        if self.token_file is None:
            return self.token
        with open(self.token_file, encoding="utf-8") as file:
            token = file.read().strip()
        if len(token) < 16:
            raise OSError(f"admin token file {self.token_file} holds fewer than 16 characters")
        return token


class MetricsConfig(_OptionalEndpoint):
    """Prometheus metrics over HTTP at /metrics; off unless `listen` is set."""


class Config(_Model):
    """A node's complete configuration. ``Config()`` is a valid single-node default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: NodeConfig = Field(default_factory=NodeConfig)
    timers: TimersConfig = Field(default_factory=TimersConfig)
    neighbors: tuple[NeighborConfig, ...] = ()
    dynamic_neighbors: tuple[DynamicNeighborConfig, ...] = ()
    mcp: McpConfig = Field(default_factory=McpConfig)
    graceful_restart: GracefulRestartConfig = Field(default_factory=GracefulRestartConfig)
    damping: DampingConfig = Field(default_factory=DampingConfig)
    forwarding: ForwardingConfig = Field(default_factory=ForwardingConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tls: TlsConfig | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    agents: tuple[BackendConfig, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        own: dict[str, str] = {self.node.advertise_address: "advertise_address"}
        listen_host, listen_port = split_host_port(self.node.listen)
        if listen_port != 0 and not _is_wildcard(listen_host):
            own.setdefault(self.node.listen, "listen")
        seen: dict[str, int] = {}
        for index, neighbor in enumerate(self.neighbors):
            # Addresses are canonical after field validation, so equal text means
            # the same endpoint.
            if neighbor.address in own:
                problems.append(
                    (
                        ("neighbors", index, "address"),
                        f"{neighbor.address} is this node's own {own[neighbor.address]};"
                        " a node cannot peer with itself",
                    )
                )
            if neighbor.address in seen:
                problems.append(
                    (
                        ("neighbors", index, "address"),
                        f"duplicate neighbour {neighbor.address}, already configured"
                        f" as neighbors[{seen[neighbor.address]}]",
                    )
                )
            else:
                seen[neighbor.address] = index
            problems += self._session_problems(("neighbors", index), neighbor)
        for index, dynamic in enumerate(self.dynamic_neighbors):
            problems += self._session_problems(("dynamic_neighbors", index), dynamic)
        if problems:
            raise _Problems(problems)
        return self

    def _session_problems(
        self, where: tuple[str | int, ...], peer: NeighborConfig | DynamicNeighborConfig
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """What a neighbour or a dynamic range gets wrong against the rest of the configuration."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if peer.route_reflector_client and peer.asn != self.node.asn:
            problems.append(
                (
                    (*where, "route_reflector_client"),
                    f"AS{peer.asn} is not this node's AS{self.node.asn}: only iBGP neighbours can be"
                    " route reflector clients (RFC 4456 §2)",
                )
            )
        for key in ("import_policy", "export_policy"):
            assignment: PolicyAssignment | None = getattr(peer, key)
            if assignment is not None:
                problems += [
                    ((*where, key, *loc), message)
                    for loc, message in self.policy.assignment_problems(assignment)
                ]
        hold, keepalive = peer.hold_time, self.timers.keepalive_time
        if keepalive is not None and hold is not None and 0 < hold <= keepalive:
            problems.append(
                (
                    (*where, "hold_time"),
                    f"hold time {hold} must be greater than timers.keepalive_time ({keepalive})",
                )
            )
        return problems

    def is_internal(self, neighbor: NeighborConfig) -> bool:
        """True for an iBGP neighbour (same ASN as this node), False for eBGP."""
        return neighbor.asn == self.node.asn

    def hold_time_for(self, neighbor: NeighborConfig) -> int:
        """The hold time this node proposes to ``neighbor`` in its OPEN."""
        return self.timers.hold_time if neighbor.hold_time is None else neighbor.hold_time

    def keepalive_time_for(self, neighbor: NeighborConfig) -> int:
        """The configured KEEPALIVE interval for ``neighbor`` (before negotiation)."""
        hold = self.hold_time_for(neighbor)
        if hold == 0:
            return 0
        if self.timers.keepalive_time is not None:
            return self.timers.keepalive_time
        return hold // 3


# --------------------------------------------------------------------------- error conversion


def _format_location(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the mapping found at ``loc``."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue  # an index into a sequence of the current model
        fields = model.model_fields
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return None
        candidates = (field.annotation, *typing.get_args(field.annotation))
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return None
    return model


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = "null" if value is None else type(value).__name__
    return kind if value is None else f"{kind} {text}"


def _unknown_key_message(loc: Sequence[str | int]) -> str:
    parent = _model_at(loc[:-1])
    if parent is None:
        return "unknown key"
    allowed = sorted(field.alias or name for name, field in parent.model_fields.items())
    message = "unknown key"
    key = loc[-1]
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    return f"{message}; allowed keys here: {', '.join(allowed)}"


_TYPE_NAMES = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "float_type": "a number",
    "finite_number": "a finite number",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
}


def _problems_from_validation_error(
    error: ValidationError,
) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for item in error.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(item["loc"])
        kind = item["type"]
        if kind == "default_factory_not_called":
            continue  # a consequence of an error reported for an earlier field
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, _Problems):
            problems.extend((loc + sub, message) for sub, message in cause.items)
        elif kind == "value_error" and isinstance(cause, Exception):
            problems.append((loc, str(cause)))
        elif kind == "extra_forbidden":
            problems.append((loc, _unknown_key_message(loc)))
        elif kind == "missing":
            problems.append((loc, "required key is missing"))
        elif kind in _TYPE_NAMES:
            value = item["input"]
            message = f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}"
            if kind == "string_type" and isinstance(value, (bool, int, float)):
                message += " (quote the value in YAML to make it a string)"
            problems.append((loc, message))
        else:
            problems.append((loc, item["msg"]))
    return problems


# --------------------------------------------------------------------------- loading


def _parse(
    data: object,
    source: str,
    line_of: Callable[[tuple[str | int, ...]], int | None],
) -> Config:
    if data is None:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "",
                    "the configuration is empty; expected a mapping with the keys"
                    " node, timers and neighbors (write {} for all defaults)",
                )
            ],
        )
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "",
                    f"the configuration must be a mapping with the keys node, timers"
                    f" and neighbors, got {type(data).__name__}",
                    line_of(()),
                )
            ],
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [
            ConfigProblem(_format_location(loc), message, line_of(loc))
            for loc, message in _problems_from_validation_error(exc)
        ]
        raise ConfigError(source, problems) from None


def parse_config(data: object, *, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data; raise ConfigError listing every problem."""
    return _parse(data, source, lambda loc: None)


def parse_policy(data: object, *, source: str = "<policy>") -> PolicyConfig:
    """Validate the value of a `policy:` section (already parsed YAML or JSON), located as in a file."""
    return _parse({"policy": {} if data is None else data}, source, lambda loc: None).policy


def parse_policy_yaml(text: str, *, source: str = "<policy>") -> PolicyConfig:
    """A `policy` section given on its own (the admin API's SetPolicy), validated like the file's.

    The text is either the mapping under `policy:` or a document with a top-level `policy:` key;
    empty text is no policy. Problems are located as in the file (`policy.policies[0].name`).
    """
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.MarkedYAMLError as error:
        raise ConfigError(source, [_yaml_syntax_problem(error)]) from None
    if isinstance(data, dict) and set(data) == {"policy"}:
        data = data["policy"]
    return parse_policy(data, source=source)


def policy_yaml(policy: PolicyConfig) -> str:
    """The `policy` section as YAML, without the keys left at their defaults ("" for no policy)."""
    data = policy.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return yaml.safe_dump({"policy": data}, sort_keys=False) if data else ""


def _yaml_line(node: yaml.Node, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest ancestor."""
    line: int = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    child = value_node
                    # For an unknown or mistyped key, point at the key itself.
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            return line
        node = child
        line = node.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node) -> list[ConfigProblem]:
    """Keys repeated within one mapping, which PyYAML would silently collapse."""
    problems: list[ConfigProblem] = []

    def walk(current: yaml.Node, loc: tuple[str | int, ...]) -> None:
        if isinstance(current, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in current.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in first_line and key != "<<":
                    problems.append(
                        ConfigProblem(
                            _format_location((*loc, key)),
                            f"duplicate key (first given on line {first_line[key]})",
                            line,
                        )
                    )
                else:
                    first_line.setdefault(key, line)
                walk(value_node, (*loc, key))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, (*loc, index))

    walk(node, ())
    return problems


def _yaml_syntax_problem(exc: yaml.MarkedYAMLError) -> ConfigProblem:
    # PyYAML splits a message into a context ("while parsing a flow sequence", with the
    # mark where that construct started) and the problem proper, with its own mark.
    mark = exc.problem_mark or exc.context_mark
    parts: list[str] = []
    if exc.context:
        context = exc.context
        context_mark = exc.context_mark
        if context_mark is not None and mark is not None and context_mark.line != mark.line:
            context += f" started on line {context_mark.line + 1}"
        parts.append(context)
    if exc.problem:
        parts.append(exc.problem)
    text = ", ".join(parts) or "invalid YAML"
    if mark is None:
        return ConfigProblem("", f"YAML syntax error: {text}")
    return ConfigProblem("", f"YAML syntax error: {text} (column {mark.column + 1})", mark.line + 1)


def _read_yaml(path: str | os.PathLike[str]) -> tuple[str, yaml.Node | None, object]:
    """The file's source name, YAML node tree (for line numbers) and data; ConfigError on any problem."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("", "file not found")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(source, [ConfigProblem("", f"cannot read file: {reason}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not valid UTF-8 (byte offset {exc.start})")]) from None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return source, None, None
        early = _duplicate_keys(root) + _base60_communities(root)
        if early:
            raise ConfigError(source, early)
        return source, root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, [_yaml_syntax_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigProblem("", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


def _base60_communities(root: yaml.Node) -> list[ConfigProblem]:
    """Unquoted `ASN:value` communities under `policy`, which YAML 1.1 reads as base-60 integers.

    PyYAML follows YAML 1.1, where digits separated by colons, each part after the first below 60,
    are a sexagesimal number: `65001:10` would silently become the community 3900070.
    """
    problems: list[ConfigProblem] = []

    def walk(node: yaml.Node, location: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, (*location, str(key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*location, index))
        elif node.tag == "tag:yaml.org,2002:int" and ":" in node.value and location[:1] == ("policy",):
            text = str(node.value)
            problems.append(
                ConfigProblem(
                    _format_location(location),
                    f"YAML reads the unquoted {text} as a base-60 number, not a community; write '{text}'",
                    node.start_mark.line + 1,
                )
            )

    walk(root, ())
    return problems


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a YAML configuration file; raise ConfigError on any problem.

    `${VAR}` references in its string values are expanded from `environ` (default: this process's
    environment) before validation.
    """
    source, root, data = _read_yaml(path)

    def line_of(loc: tuple[str | int, ...]) -> int | None:
        return None if root is None else _yaml_line(root, loc)

    data, unset = expand_environment(data, os.environ if environ is None else environ)
    if unset:
        raise ConfigError(
            source, [ConfigProblem(_format_location(loc), message, line_of(loc)) for loc, message in unset]
        )
    return _parse(data, source, line_of)


def load_policy(path: str | os.PathLike[str]) -> PolicyConfig:
    """Read and validate a YAML file holding a `policy:` section and nothing else (examples/policies)."""
    source, root, data = _read_yaml(path)
    if not isinstance(data, dict) or "policy" not in data:
        raise ConfigError(source, [ConfigProblem("", "expected a mapping with a policy: section", 1)])

    def line_of(loc: tuple[str | int, ...]) -> int | None:
        return None if root is None else _yaml_line(root, loc)

    others = [
        ConfigProblem(key, "unknown key; allowed keys here: policy", line_of((key,)))
        for key in data
        if key != "policy"
    ]
    if others:
        raise ConfigError(source, others)
    return _parse({"policy": data["policy"]}, source, line_of).policy
