"""Path attribute sets: interning, RFC 7606 checks and the transforms applied on export.

Interning (BIRD's trick, DESIGN §4.5): every attribute set the node holds goes through one
`AttributePool`, so routes that share attributes share one object. Identity then stands for
equality, which the Adj-RIB-Out uses to skip names whose advertisement did not change, and the
per-set work (checks, export transforms, decision keys) runs once per set instead of once per name.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Final

from agentmesh.bgp.messages import PathAttributes

#: RFC 1997 well-known communities.
NO_EXPORT: Final = 0xFFFFFF01
NO_ADVERTISE: Final = 0xFFFFFF02

DEFAULT_LOCAL_PREF: Final = 100

# Bounds on what one attribute set may carry. Beyond them the set is malformed and its names are
# treated as withdrawn (RFC 7606 §2), so one misbehaving peer cannot make the node hoard memory.
MAX_AS_PATH: Final = 255
MAX_COMMUNITIES: Final = 1024
MAX_CLUSTER_LIST: Final = 255
MAX_CAPABILITIES: Final = 64
MAX_TAG_LENGTH: Final = 64
MAX_DESCRIPTION: Final = 4096
MAX_REGION: Final = 64
MAX_INPUT_SCHEMA: Final = 64 * 1024
MAX_NEXT_HOP: Final = 261  # a DNS name of 253 octets, a colon and a port


class AttributePool:
    """Canonical attribute sets: `intern(a) is intern(b)` whenever `a == b`."""

    def __init__(self) -> None:
        self._sets: dict[PathAttributes, PathAttributes] = {}

    def intern(self, attrs: PathAttributes) -> PathAttributes:
        return self._sets.setdefault(attrs, attrs)

    def __len__(self) -> int:
        return len(self._sets)

    def collect(self, in_use: set[int]) -> None:
        """Forget sets no route refers to any more (`in_use` holds their ids)."""
        self._sets = {a: a for a in self._sets if id(a) in in_use}


def malformation(attrs: PathAttributes) -> str | None:
    """Why an attribute set is unusable, or None. Each case is treat-as-withdraw (RFC 7606 §2)."""
    if not attrs.next_hop or len(attrs.next_hop) > MAX_NEXT_HOP or ":" not in attrs.next_hop:
        return "NEXT_HOP is not a host:port address"  # RFC 7606 §7.3
    if len(attrs.as_path) > MAX_AS_PATH:
        return f"AS_PATH longer than {MAX_AS_PATH}"
    if 0 in attrs.as_path:
        return "AS_PATH contains AS 0"  # RFC 7607 §2
    if len(attrs.communities) > MAX_COMMUNITIES or len(attrs.large_communities) > MAX_COMMUNITIES:
        return f"more than {MAX_COMMUNITIES} communities"
    if len(attrs.cluster_list) > MAX_CLUSTER_LIST:
        return f"CLUSTER_LIST longer than {MAX_CLUSTER_LIST}"
    return _agent_malformation(attrs)


def _agent_malformation(attrs: PathAttributes) -> str | None:
    agent = attrs.agent
    if len(agent.capabilities) > MAX_CAPABILITIES or any(len(t) > MAX_TAG_LENGTH for t in agent.capabilities):
        return f"more than {MAX_CAPABILITIES} capabilities or a tag over {MAX_TAG_LENGTH} characters"
    if len(agent.description) > MAX_DESCRIPTION or len(agent.region) > MAX_REGION:
        return "description or region too long"
    if len(agent.input_schema) > MAX_INPUT_SCHEMA:
        return f"input schema over {MAX_INPUT_SCHEMA} characters"
    if agent.input_schema:
        try:
            json.loads(agent.input_schema, parse_constant=_reject_constant)
        except ValueError:
            return "input schema is not JSON"
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; JSON does not


def imported(attrs: PathAttributes, *, internal: bool) -> PathAttributes:
    """The set as stored in Adj-RIB-In.

    From an external peer, LOCAL_PREF is ignored (RFC 4271 §5.1.5) and so are ORIGINATOR_ID and
    CLUSTER_LIST, which only mean something inside one AS (RFC 4456 §8).
    """
    if not internal and (
        attrs.local_pref is not None or attrs.originator_id is not None or attrs.cluster_list
    ):
        return replace(attrs, local_pref=None, originator_id=None, cluster_list=())
    return attrs


def exported_external(
    attrs: PathAttributes, local_asn: int, next_hop: str, *, local: bool, med_set_here: bool = False
) -> PathAttributes:
    """The set sent to an eBGP peer (RFC 4271 §5.1.2-§5.1.5, RFC 4456 §8).

    Prepend our ASN, forward calls through us, drop LOCAL_PREF and the reflection attributes, and
    keep MED only for routes we originate or whose MED our export policy set: a MED learned from
    one AS is not passed to another (RFC 4271 §5.1.4).
    """
    return replace(
        attrs,
        as_path=(local_asn, *attrs.as_path),
        next_hop=next_hop,
        local_pref=None,
        med=attrs.med if local or med_set_here else None,
        originator_id=None,
        cluster_list=(),
    )


def exported_internal(attrs: PathAttributes) -> PathAttributes:
    """The set sent to an iBGP peer: NEXT_HOP unchanged, LOCAL_PREF always present (RFC 4271 §5.1.5)."""
    if attrs.local_pref is None:
        return replace(attrs, local_pref=DEFAULT_LOCAL_PREF)
    return attrs


def reflected(attrs: PathAttributes, originator_id: int, cluster_id: int) -> PathAttributes:
    """The set a route reflector sends on (RFC 4456 §8): NEXT_HOP unchanged, so calls go straight to
    the origin; ORIGINATOR_ID set once, by the first reflector; its CLUSTER_ID prepended to CLUSTER_LIST.
    """
    return replace(
        exported_internal(attrs),
        originator_id=attrs.originator_id if attrs.originator_id is not None else originator_id,
        cluster_list=(cluster_id, *attrs.cluster_list),
    )
