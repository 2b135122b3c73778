"""The BGP message model: frozen values the core works with.

These mirror `proto/agentmesh/v1/bgp.proto` but carry no protobuf: `transport.codec` converts at
the edge, so the core can be driven by tests with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode, describe

BGP_VERSION = 4
#: RFC 9003 raised the shutdown communication limit from 128 (RFC 8203) to 255 octets.
MAX_SHUTDOWN_COMMUNICATION_OCTETS = 255


class Origin(IntEnum):
    """ORIGIN values (RFC 4271 §5.1.1); lower is preferred by the decision process."""

    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class BackendProtocol(IntEnum):
    """How the origin node reaches an agent's backend."""

    UNSPECIFIED = 0
    LOCAL = 1
    MASTRA = 2
    A2A = 3
    MCP = 4


@dataclass(frozen=True, slots=True)
class LargeCommunity:
    """A large community (RFC 8092)."""

    global_administrator: int
    local_data_1: int
    local_data_2: int


@dataclass(frozen=True, slots=True)
class Health:
    """Backend health measured at the origin node."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    load: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentAttributes:
    """What the agent behind a route is (DESIGN §2)."""

    capabilities: tuple[str, ...] = ()
    description: str = ""
    backend_protocol: BackendProtocol = BackendProtocol.UNSPECIFIED
    region: str = ""
    input_schema: str = ""
    health: Health = field(default_factory=Health)


@dataclass(frozen=True, slots=True)
class PathAttributes:
    """Path attributes shared by the names of one UPDATE (RFC 4271 §5, RFC 4456 §8)."""

    origin: Origin
    as_path: tuple[int, ...]
    next_hop: str
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[int, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    originator_id: int | None = None
    cluster_list: tuple[int, ...] = ()
    agent: AgentAttributes = field(default_factory=AgentAttributes)


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """Graceful restart capability (RFC 4724 §3)."""

    restart_time: int
    restarting: bool = False
    forwarding_state_preserved: bool = False


@dataclass(frozen=True, slots=True)
class MultiplePaths:
    """Multiple paths per name (the ADD-PATH capability, RFC 7911 §4)."""

    receive: bool = False
    send: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The capabilities a speaker advertises in OPEN (RFC 5492)."""

    route_refresh: bool = False
    graceful_restart: GracefulRestart | None = None
    multiple_paths: MultiplePaths | None = None


@dataclass(frozen=True, slots=True)
class Open:
    """OPEN (RFC 4271 §4.2)."""

    asn: int
    hold_time: int
    bgp_identifier: int
    capabilities: Capabilities = field(default_factory=Capabilities)
    version: int = BGP_VERSION


@dataclass(frozen=True, slots=True)
class Update:
    """UPDATE (RFC 4271 §4.3); with no names and `end_of_rib` set it is End-of-RIB (RFC 4724 §2)."""

    withdrawn: tuple[str, ...] = ()
    attributes: PathAttributes | None = None
    announced: tuple[str, ...] = ()
    end_of_rib: bool = False
    withdrawn_path_ids: tuple[int, ...] = ()
    announced_path_ids: tuple[int, ...] = ()
    #: Set by the decoder, never sent: why the attributes are unusable, so that the announced names
    #: are treated as withdrawn (RFC 7606 §2) rather than the session being reset.
    attribute_error: str = ""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """KEEPALIVE (RFC 4271 §4.4)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """NOTIFICATION (RFC 4271 §4.5) with an optional RFC 8203 shutdown communication."""

    code: int
    subcode: int = 0
    data: bytes = b""
    shutdown_communication: str = ""

    @property
    def names(self) -> tuple[str, str]:
        """The code and subcode as names, for logs."""
        return describe(self.code, self.subcode)

    def __str__(self) -> str:
        code, subcode = self.names
        text = f"{self.code}/{self.subcode} ({code}/{subcode})"
        return f"{text}: {self.shutdown_communication}" if self.shutdown_communication else text


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """ROUTE-REFRESH (RFC 2918 §3)."""


Message = Open | Update | Keepalive | Notification | RouteRefresh

KEEPALIVE = Keepalive()


def cease(subcode: CeaseSubcode, communication: str = "") -> Notification:
    """A Cease NOTIFICATION; the communication is clipped to RFC 9003's 255 octets."""
    encoded = communication.encode()[:MAX_SHUTDOWN_COMMUNICATION_OCTETS]
    return Notification(ErrorCode.CEASE, subcode, shutdown_communication=encoded.decode(errors="ignore"))
