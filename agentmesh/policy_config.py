"""The `policy:` section of a node's configuration: defined sets, policies and where they apply.

The YAML shape (every key optional; `docs/policy.md` documents each one)::

    policy:
      defined_sets:
        names:        {internal: ["internal.**", "ops.*"]}
        capabilities: {billing: [billing, invoices]}
        as_paths:     {via-transit: ["_65010_"]}
        communities:  {blackhole: ["65001:666", no-export]}
        neighbors:    {customers: ["127.0.0.1:50052"]}
        regions:      {eu: [eu-west, eu-central]}
      policies:
        - name: keep-internal-inside
          statements:
            - name: internal-names
              conditions: {names: {set: internal}}
              actions: {route: reject}
      import: {policies: [keep-internal-inside], default: accept}
      export: {policies: [], default: accept}

A neighbour may replace the global assignment of a direction with its own, a `PolicyAssignment`
given as `neighbors[].import_policy` / `neighbors[].export_policy` in the node configuration.
`build_routing_policy` turns the validated section and those assignments into the engine's
`RoutingPolicy` (`agentmesh.rib.policy`).

The models follow `agentmesh.config`'s conventions: unknown keys are errors, YAML values are never
coerced across types, `null` means the default, and every problem is reported at once with its
precise location (through `agentmesh.config`'s `_Problems`). `agentmesh.config` imports this module
for its `policy:` key, so this module imports `agentmesh.config` only inside functions, which run
after both modules are loaded, and defines its own base model with the same settings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agentmesh.config_base import ConfigModel, Problems
from agentmesh.rib import names as namespace
from agentmesh.rib.attributes import MAX_AS_PATH, MAX_REGION, MAX_TAG_LENGTH
from agentmesh.rib.policy import (
    UINT32_MAX,
    WELL_KNOWN_COMMUNITIES,
    Action,
    AddCommunities,
    AddLocalPref,
    AddMed,
    AsPathCondition,
    AsPathLengthCondition,
    AsPathSet,
    CapabilityCondition,
    CapabilitySet,
    CommunityCondition,
    CommunitySet,
    Condition,
    HealthCondition,
    LocalPrefCondition,
    MatchOption,
    MedCondition,
    NameCondition,
    NameSet,
    NeighborCondition,
    NeighborSet,
    OriginAsCondition,
    Policy,
    PolicyChain,
    PrependAsPath,
    RegionCondition,
    RegionSet,
    RemoveCommunities,
    ReplaceCommunities,
    RouteDisposition,
    RoutingPolicy,
    SetLocalPref,
    SetMed,
    SetNextHopSelf,
    Statement,
    SubtractMed,
    as_path_regex,
)
from agentmesh.rib.resolve import is_glob

if TYPE_CHECKING:
    pass

__all__ = [
    "MAX_PREPEND",
    "ActionsConfig",
    "CommunitiesActionConfig",
    "ConditionsConfig",
    "DefinedSetsConfig",
    "HealthConditionConfig",
    "LocalPrefActionConfig",
    "MedActionConfig",
    "MultiSetMatchConfig",
    "PolicyAssignment",
    "PolicyConfig",
    "PolicyDefinitionConfig",
    "PrependActionConfig",
    "RangeConfig",
    "SetMatchConfig",
    "StatementConfig",
    "build_routing_policy",
    "parse_community",
]

#: Prepending more than a few times buys nothing but longer paths; 32 is generous (GoBGP allows 255).
MAX_PREPEND = 32

_Location = tuple[str | int, ...]
_Items = list[tuple[_Location, str]]

_SET_NAME_MAX = 64
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_GLOB_LABEL = re.compile(r"(?:[A-Za-z0-9_-]|\*|\?|\[!?[A-Za-z0-9_-]+\])+")
_CLASS_RANGE = re.compile(r"([A-Za-z0-9_])-([A-Za-z0-9_])")
_COMMUNITY_TEXT = re.compile(r"([0-9]+):([0-9]+)")
_DISPOSITIONS = ("accept", "reject", "none")
_DEFAULTS = ("accept", "reject")


def _problems(items: Sequence[tuple[_Location, str]]) -> ValueError:
    return Problems(items)


# --------------------------------------------------------------------------- value checks


def parse_community(value: object) -> int:
    """A community from the configuration: `"ASN:value"` (two 16-bit numbers, RFC 1997), a 32-bit
    integer, or a well-known name (`no-export`, `no-advertise`). Raises ValueError saying why not."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        kind = "null" if value is None else type(value).__name__
        raise ValueError(
            f"expected a community: 'ASN:value', a 32-bit integer or {_well_known_names()}; got {kind}"
        )
    if isinstance(value, int):
        if not 0 <= value <= UINT32_MAX:
            raise ValueError(f"community {value} is out of range: communities are 32-bit (0..4294967295)")
        return value
    if value in WELL_KNOWN_COMMUNITIES:
        return WELL_KNOWN_COMMUNITIES[value]
    found = _COMMUNITY_TEXT.fullmatch(value)
    if found is None:
        hint = ""
        close = difflib.get_close_matches(value.lower().replace("_", "-"), WELL_KNOWN_COMMUNITIES, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        raise ValueError(
            f"{value!r} is not a community: expected 'ASN:value' (e.g. '65001:100'), a 32-bit integer"
            f" or {_well_known_names()}{hint}"
        )
    high, low = int(found.group(1)), int(found.group(2))
    if high > 0xFFFF or low > 0xFFFF:
        raise ValueError(f"{value!r}: both halves of 'ASN:value' are 16-bit numbers (0..65535, RFC 1997)")
    return high << 16 | low


def _well_known_names() -> str:
    return f"a well-known name ({', '.join(WELL_KNOWN_COMMUNITIES)})"


def _check_name_pattern(entry: str) -> str:
    """An entry of a name set: a name, an aggregate `a.b.*` or a glob (agentmesh.rib.resolve)."""
    if not entry:
        raise ValueError("must not be empty")
    if len(entry) > namespace.MAX_NAME_LENGTH:
        raise ValueError(f"is {len(entry)} characters long; names are at most {namespace.MAX_NAME_LENGTH}")
    if not is_glob(entry):
        if not namespace.is_valid(entry):
            raise ValueError(
                f"{entry!r} is not a valid name: dotted labels of letters, digits, '_' and '-',"
                " optionally ending in '.*' for an aggregate"
            )
        return entry
    for label in entry.split("."):
        if label == "**":
            continue
        if "**" in label:
            raise ValueError(
                f"{entry!r}: '**' must be a whole label (it matches any number of labels);"
                " use '*' to match within a label"
            )
        if not _GLOB_LABEL.fullmatch(label):
            raise ValueError(
                f"{entry!r}: {label!r} is not a valid glob label: letters, digits, '_', '-', '*', '?'"
                " and classes such as [a-z] or [!0-9]"
            )
        for low, high in _CLASS_RANGE.findall(label):
            if low > high:
                raise ValueError(f"{entry!r}: the range {low}-{high} is empty (its ends are reversed)")
    return entry


def _check_tag(tag: str) -> str:
    if not tag:
        raise ValueError("a capability tag must not be empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"capability tags are at most {MAX_TAG_LENGTH} characters")
    return tag


def _check_as_path_expression(expression: str) -> str:
    if not expression:
        raise ValueError("an empty expression matches every AS path; write '.*' if that is meant")
    try:
        as_path_regex(expression)
    except re.error as exc:
        raise ValueError(f"{expression!r} is not a valid regular expression: {exc.msg}") from None
    return expression


def _check_neighbor_address(address: str) -> str:
    # Stored in the configuration's canonical form, so it compares equal to neighbors[].address.
    from agentmesh.config import _canonical_address

    return _canonical_address(address, allow_port_zero=False, allow_wildcard=False)


def _check_region(region: str) -> str:
    if not region:
        raise ValueError("a region must not be empty")
    if len(region) > MAX_REGION:
        raise ValueError(f"regions are at most {MAX_REGION} characters")
    return region


def _check_asn(asn: int) -> int:
    # Any AS that can appear on an AS_PATH: 4-octet (RFC 6793) and never 0 (RFC 7607).
    if not 1 <= asn <= UINT32_MAX:
        raise ValueError(f"AS {asn} is not an AS number: 1..4294967295 (RFC 6793; AS 0 is RFC 7607's)")
    return asn


def _check_uint32(value: int) -> int:
    if not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{value} is out of range: LOCAL_PREF and MED are 32-bit (0..4294967295)")
    return value


def _known_option(value: str, options: Sequence[str], what: str) -> str:
    if value not in options:
        raise ValueError(f"unknown {what} {value!r}; use {', '.join(options[:-1])} or {options[-1]}")
    return value


def _nothing_defined(kind: str, key: str) -> str:
    return f"no {kind} sets are defined (defined_sets.{key})"


def _unknown(kind: str, name: str, defined: Sequence[str], where: str) -> str:
    if not defined:
        return f"unknown {kind} {name!r}: {where}"
    close = difflib.get_close_matches(name, defined, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; defined: {', '.join(sorted(defined))}"


# --------------------------------------------------------------------------- models


class _PolicyModel(ConfigModel):
    """The configuration's model conventions (strict, unknown keys refused, null = default)."""


_SET_CHECKS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "names": ("name", _check_name_pattern),
    "capabilities": ("capability", _check_tag),
    "as_paths": ("AS-path", _check_as_path_expression),
    "communities": ("community", lambda value: value),  # parsed by _parse_communities first
    "neighbors": ("neighbour", _check_neighbor_address),
    "regions": ("region", _check_region),
}


def _community_items(values: object, prefix: _Location, problems: _Items) -> object:
    """Parse a list of community texts in place of validation; other shapes are left to pydantic."""
    if not isinstance(values, list | tuple):
        return values
    parsed: list[int] = []
    for index, value in enumerate(values):
        try:
            parsed.append(parse_community(value))
        except ValueError as exc:
            problems.append(((*prefix, index), str(exc)))
    return parsed


class DefinedSetsConfig(_PolicyModel):
    """Named sets conditions refer to; each kind has its own namespace of set names."""

    names: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    capabilities: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    as_paths: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    communities: dict[StrictStr, tuple[StrictInt, ...]] = Field(default_factory=dict)
    neighbors: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)
    regions: dict[StrictStr, tuple[StrictStr, ...]] = Field(default_factory=dict)

    @field_validator("communities", mode="before")
    @classmethod
    def _parse_communities(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        problems: _Items = []
        parsed = {key: _community_items(values, (key,), problems) for key, values in data.items()}
        if problems:
            raise _problems(problems)
        return parsed

    @field_validator("names", "capabilities", "as_paths", "communities", "neighbors", "regions")
    @classmethod
    def _valid_sets(
        cls, value: dict[str, tuple[Any, ...]], info: ValidationInfo
    ) -> dict[str, tuple[Any, ...]]:
        kind, check = _SET_CHECKS[str(info.field_name)]
        problems: _Items = []
        result: dict[str, tuple[Any, ...]] = {}
        for set_name, entries in value.items():
            if not _IDENTIFIER.fullmatch(set_name) or len(set_name) > _SET_NAME_MAX:
                problems.append(
                    (
                        (set_name,),
                        f"{set_name!r} is not a valid set name: letters, digits, '_', '.' and '-',"
                        f" starting with a letter or digit, at most {_SET_NAME_MAX} characters",
                    )
                )
            if not entries:
                problems.append(((set_name,), f"an empty set matches nothing; give at least one {kind}"))
            checked: list[Any] = []
            first: dict[Any, int] = {}
            for index, entry in enumerate(entries):
                try:
                    entry = check(entry)
                except ValueError as exc:
                    problems.append(((set_name, index), str(exc)))
                    continue
                if entry in first:
                    problems.append(
                        ((set_name, index), f"{entry!r} is already in the set at index {first[entry]}")
                    )
                    continue
                first[entry] = index
                checked.append(entry)
            result[set_name] = tuple(checked)
        if problems:
            raise _problems(problems)
        return result


class SetMatchConfig(_PolicyModel):
    """A condition on a defined set: `set` names it, `match` is any (default) or invert."""

    match_options: ClassVar[tuple[str, ...]] = ("any", "invert")

    set: StrictStr
    match: StrictStr = "any"

    @field_validator("match")
    @classmethod
    def _known_match(cls, value: str) -> str:
        if value == "all" and "all" not in cls.match_options:
            raise ValueError(
                "'all' applies only to capabilities and communities, of which a route carries several;"
                " use any or invert"
            )
        return _known_option(value, cls.match_options, "match option")


class MultiSetMatchConfig(SetMatchConfig):
    """A condition on a set of values the route carries several of: match any, all or invert."""

    match_options: ClassVar[tuple[str, ...]] = ("any", "all", "invert")


class RangeConfig(_PolicyModel):
    """An inclusive range; an absent bound is open, but one of them must be given."""

    min: StrictInt | None = None
    max: StrictInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: _Items = []
        if self.min is None and self.max is None:
            problems.append(((), "give min, max or both"))
        for key in ("min", "max"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= UINT32_MAX:
                problems.append(((key,), f"{value} is out of range 0..4294967295"))
        if self.min is not None and self.max is not None and self.min > self.max:
            problems.append((("min",), f"min {self.min} is greater than max {self.max}: nothing would match"))
        if problems:
            raise _problems(problems)
        return self


class HealthConditionConfig(_PolicyModel):
    """Bounds on the backend's health as the origin measured it; every bound given must hold."""

    max_latency_ms: StrictFloat | None = Field(default=None, allow_inf_nan=False)
    max_error_rate: StrictFloat | None = Field(default=None, allow_inf_nan=False)
    max_load: StrictFloat | None = Field(default=None, allow_inf_nan=False)

    @field_validator("max_latency_ms", "max_error_rate", "max_load")
    @classmethod
    def _not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError(f"must be 0 or more, got {value:g}")
        return value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.max_latency_ms is None and self.max_error_rate is None and self.max_load is None:
            raise _problems([((), "give at least one of max_latency_ms, max_error_rate and max_load")])
        return self


class ConditionsConfig(_PolicyModel):
    """What a statement matches; every condition given must hold (none: the statement matches all)."""

    names: SetMatchConfig | None = None
    capabilities: MultiSetMatchConfig | None = None
    as_path: SetMatchConfig | None = None
    as_path_length: RangeConfig | None = None
    origin_as: tuple[StrictInt, ...] | None = None
    communities: MultiSetMatchConfig | None = None
    neighbors: SetMatchConfig | None = None
    regions: SetMatchConfig | None = None
    med: RangeConfig | None = None
    local_pref: RangeConfig | None = None
    health: HealthConditionConfig | None = None

    @field_validator("origin_as")
    @classmethod
    def _valid_origins(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("an empty list matches nothing; give at least one AS number")
        problems: _Items = []
        for index, asn in enumerate(value):
            try:
                _check_asn(asn)
            except ValueError as exc:
                problems.append(((index,), str(exc)))
        if problems:
            raise _problems(problems)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        length = self.as_path_length
        if length is not None and length.min is not None and length.min > MAX_AS_PATH:
            raise _problems(
                [
                    (
                        ("as_path_length", "min"),
                        f"AS paths are at most {MAX_AS_PATH} ASes long; nothing would match",
                    )
                ]
            )
        return self


class LocalPrefActionConfig(_PolicyModel):
    """Set LOCAL_PREF, or add to it (a negative number lowers it); exactly one of the two."""

    set: StrictInt | None = None
    add: StrictInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = [key for key in ("set", "add") if getattr(self, key) is not None]
        if len(given) != 1:
            raise _problems([((), "give exactly one of set and add")])
        if self.set is not None:
            _in_range(self.set, "set")
        if self.add is not None and not -UINT32_MAX <= self.add <= UINT32_MAX:
            raise _problems([(("add",), f"{self.add} is out of range -4294967295..4294967295")])
        return self


def _in_range(value: int, key: str) -> None:
    try:
        _check_uint32(value)
    except ValueError as exc:
        raise _problems([((key,), str(exc))]) from None


class MedActionConfig(_PolicyModel):
    """Set MED, add to it or subtract from it; exactly one of the three."""

    set: StrictInt | None = None
    add: StrictInt | None = None
    subtract: StrictInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = [key for key in ("set", "add", "subtract") if getattr(self, key) is not None]
        if len(given) != 1:
            raise _problems([((), "give exactly one of set, add and subtract")])
        _in_range(getattr(self, given[0]), given[0])
        return self


class CommunitiesActionConfig(_PolicyModel):
    """Add and/or remove communities (remove applies first), or replace them all."""

    add: tuple[StrictInt, ...] | None = None
    remove: tuple[StrictInt, ...] | None = None
    replace: tuple[StrictInt, ...] | None = None

    @field_validator("add", "remove", "replace", mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        problems: _Items = []
        parsed = _community_items(data, (), problems)
        if problems:
            raise _problems(problems)
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: _Items = []
        if self.add is None and self.remove is None and self.replace is None:
            problems.append(((), "give add, remove or replace"))
        if self.replace is not None and (self.add is not None or self.remove is not None):
            problems.append(
                (("replace",), "replace sets the whole list: it cannot be combined with add or remove")
            )
        for key in ("add", "remove"):
            if getattr(self, key) == ():
                problems.append(((key,), "an empty list does nothing; give at least one community"))
        if problems:
            raise _problems(problems)
        return self


class PrependActionConfig(_PolicyModel):
    """Prepend an AS `times` times: this node's AS unless `asn` is given (RFC 4271 §5.1.2)."""

    times: StrictInt
    asn: StrictInt | None = None

    @field_validator("times")
    @classmethod
    def _valid_times(cls, value: int) -> int:
        if not 1 <= value <= MAX_PREPEND:
            raise ValueError(f"must be 1..{MAX_PREPEND}, got {value}")
        return value

    @field_validator("asn")
    @classmethod
    def _valid_asn(cls, value: int | None) -> int | None:
        return None if value is None else _check_asn(value)


class ActionsConfig(_PolicyModel):
    """What a matching statement does: attribute changes, then the route disposition."""

    route: StrictStr = "none"
    local_pref: LocalPrefActionConfig | None = None
    med: MedActionConfig | None = None
    communities: CommunitiesActionConfig | None = None
    as_path_prepend: PrependActionConfig | None = None
    next_hop_self: StrictBool = False

    @field_validator("route")
    @classmethod
    def _known_route(cls, value: str) -> str:
        return _known_option(value, _DISPOSITIONS, "route action")

    @property
    def does_something(self) -> bool:
        return self.route != "none" or any(
            (self.local_pref, self.med, self.communities, self.as_path_prepend, self.next_hop_self)
        )


class StatementConfig(_PolicyModel):
    """One statement: conditions (all must match) and actions."""

    name: StrictStr
    conditions: ConditionsConfig = Field(default_factory=ConditionsConfig)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_identifier(value, "statement")

    @model_validator(mode="after")
    def _acts(self) -> Self:
        if not self.actions.does_something:
            raise _problems(
                [
                    (
                        ("actions",),
                        "the statement does nothing: give route: accept or reject, or an attribute action"
                        " (local_pref, med, communities, as_path_prepend, next_hop_self)",
                    )
                ]
            )
        return self


def _check_identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(value) or len(value) > _SET_NAME_MAX:
        raise ValueError(
            f"{value!r} is not a valid {what} name: letters, digits, '_', '.' and '-',"
            f" starting with a letter or digit, at most {_SET_NAME_MAX} characters"
        )
    return value


class PolicyDefinitionConfig(_PolicyModel):
    """A named policy: statements evaluated in order."""

    name: StrictStr
    statements: tuple[StatementConfig, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_identifier(value, "policy")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.statements:
            raise _problems([(("statements",), "a policy needs at least one statement")])
        problems: _Items = []
        seen: dict[str, int] = {}
        for index, statement in enumerate(self.statements):
            if statement.name in seen:
                problems.append(
                    (
                        ("statements", index, "name"),
                        f"duplicate statement name {statement.name!r}, already used by"
                        f" statements[{seen[statement.name]}]",
                    )
                )
            seen.setdefault(statement.name, index)
        if problems:
            raise _problems(problems)
        return self


class PolicyAssignment(_PolicyModel):
    """Which policies apply, in order, and the default when no statement decides."""

    policies: tuple[StrictStr, ...] = ()
    default: StrictStr = "accept"

    @field_validator("default")
    @classmethod
    def _known_default(cls, value: str) -> str:
        return _known_option(value, _DEFAULTS, "default")

    @field_validator("policies")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems: _Items = []
        seen: dict[str, int] = {}
        for index, name in enumerate(value):
            if name in seen:
                problems.append(((index,), f"{name!r} is already listed at policies[{seen[name]}]"))
            seen.setdefault(name, index)
        if problems:
            raise _problems(problems)
        return value


# Which defined-set kind each set condition refers to: (conditions key, defined_sets key, kind).
_SET_REFERENCES = (
    ("names", "names", "name"),
    ("capabilities", "capabilities", "capability"),
    ("as_path", "as_paths", "AS-path"),
    ("communities", "communities", "community"),
    ("neighbors", "neighbors", "neighbour"),
    ("regions", "regions", "region"),
)


class PolicyConfig(_PolicyModel):
    """The `policy:` section: defined sets, policies, and the global import and export assignments."""

    # `import` is a Python keyword, so the field is `import_` with the YAML key as its alias; dumps
    # use the alias too, so that what model_dump() writes validates again.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    defined_sets: DefinedSetsConfig = Field(default_factory=DefinedSetsConfig)
    policies: tuple[PolicyDefinitionConfig, ...] = ()
    import_: PolicyAssignment | None = Field(default=None, alias="import")
    export: PolicyAssignment | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: _Items = []
        seen: dict[str, int] = {}
        for index, policy in enumerate(self.policies):
            if policy.name in seen:
                problems.append(
                    (
                        ("policies", index, "name"),
                        f"duplicate policy name {policy.name!r},"
                        f" already used by policies[{seen[policy.name]}]",
                    )
                )
            seen.setdefault(policy.name, index)
            for position, statement in enumerate(policy.statements):
                for key, sets_key, kind in _SET_REFERENCES:
                    reference: SetMatchConfig | None = getattr(statement.conditions, key)
                    defined: dict[str, Any] = getattr(self.defined_sets, sets_key)
                    if reference is not None and reference.set not in defined:
                        problems.append(
                            (
                                ("policies", index, "statements", position, "conditions", key, "set"),
                                _unknown(
                                    f"{kind} set",
                                    reference.set,
                                    list(defined),
                                    _nothing_defined(kind, sets_key),
                                ),
                            )
                        )
        for key, assignment in (("import", self.import_), ("export", self.export)):
            if assignment is not None:
                problems += [((key, *loc), message) for loc, message in self.assignment_problems(assignment)]
        if problems:
            raise _problems(problems)
        return self

    def assignment_problems(self, assignment: PolicyAssignment) -> list[tuple[_Location, str]]:
        """Policies an assignment names that this section does not define, located in `assignment`.

        `agentmesh.config` calls this for each neighbour's import_policy and export_policy.
        """
        defined = [policy.name for policy in self.policies]
        return [
            (
                ("policies", index),
                _unknown("policy", name, defined, "no policies are defined (policy.policies)"),
            )
            for index, name in enumerate(assignment.policies)
            if name not in defined
        ]


# --------------------------------------------------------------------------- building the engine's policy


class _Sets:
    """The defined sets as engine values, by kind and name."""

    def __init__(self, config: DefinedSetsConfig) -> None:
        self.names = {name: NameSet(name, entries) for name, entries in config.names.items()}
        self.capabilities = {
            name: CapabilitySet(name, frozenset(tags)) for name, tags in config.capabilities.items()
        }
        self.as_paths = {name: AsPathSet(name, patterns) for name, patterns in config.as_paths.items()}
        self.communities = {
            name: CommunitySet(name, frozenset(values)) for name, values in config.communities.items()
        }
        self.neighbors = {
            name: NeighborSet(name, frozenset(addresses)) for name, addresses in config.neighbors.items()
        }
        self.regions = {name: RegionSet(name, frozenset(regions)) for name, regions in config.regions.items()}


def _conditions(config: ConditionsConfig, sets: _Sets) -> tuple[Condition, ...]:
    # Cheap, selective tests first: a statement stops at its first failing condition, and the name
    # condition, the only per-name one, always runs last (PolicyChain orders it so).
    conditions: list[Condition] = []
    if config.neighbors is not None:
        conditions.append(
            NeighborCondition(sets.neighbors[config.neighbors.set], MatchOption(config.neighbors.match))
        )
    if config.origin_as is not None:
        conditions.append(OriginAsCondition(frozenset(config.origin_as)))
    if config.as_path_length is not None:
        conditions.append(AsPathLengthCondition(config.as_path_length.min, config.as_path_length.max))
    if config.med is not None:
        conditions.append(MedCondition(config.med.min, config.med.max))
    if config.local_pref is not None:
        conditions.append(LocalPrefCondition(config.local_pref.min, config.local_pref.max))
    if config.regions is not None:
        conditions.append(
            RegionCondition(sets.regions[config.regions.set], MatchOption(config.regions.match))
        )
    if config.communities is not None:
        conditions.append(
            CommunityCondition(
                sets.communities[config.communities.set], MatchOption(config.communities.match)
            )
        )
    if config.capabilities is not None:
        conditions.append(
            CapabilityCondition(
                sets.capabilities[config.capabilities.set], MatchOption(config.capabilities.match)
            )
        )
    if config.health is not None:
        health = config.health
        conditions.append(HealthCondition(health.max_latency_ms, health.max_error_rate, health.max_load))
    if config.as_path is not None:
        conditions.append(
            AsPathCondition(sets.as_paths[config.as_path.set], MatchOption(config.as_path.match))
        )
    if config.names is not None:
        conditions.append(NameCondition(sets.names[config.names.set], MatchOption(config.names.match)))
    return tuple(conditions)


def _actions(config: ActionsConfig) -> tuple[Action, ...]:
    actions: list[Action] = []
    communities = config.communities
    if communities is not None:
        if communities.replace is not None:
            actions.append(ReplaceCommunities(communities.replace))
        if communities.remove is not None:
            actions.append(RemoveCommunities(communities.remove))
        if communities.add is not None:
            actions.append(AddCommunities(communities.add))
    med = config.med
    if med is not None:
        if med.set is not None:
            actions.append(SetMed(med.set))
        elif med.add is not None:
            actions.append(AddMed(med.add))
        elif med.subtract is not None:
            actions.append(SubtractMed(med.subtract))
    local_pref = config.local_pref
    if local_pref is not None:
        if local_pref.set is not None:
            actions.append(SetLocalPref(local_pref.set))
        elif local_pref.add is not None:
            actions.append(AddLocalPref(local_pref.add))
    if config.as_path_prepend is not None:
        actions.append(PrependAsPath(config.as_path_prepend.times, config.as_path_prepend.asn))
    if config.next_hop_self:
        actions.append(SetNextHopSelf())
    return tuple(actions)


def _policy(config: PolicyDefinitionConfig, sets: _Sets) -> Policy:
    return Policy(
        config.name,
        tuple(
            Statement(
                statement.name,
                _conditions(statement.conditions, sets),
                _actions(statement.actions),
                RouteDisposition(statement.actions.route),
            )
            for statement in config.statements
        ),
    )


def build_routing_policy(
    policy: PolicyConfig,
    neighbors: Mapping[str, tuple[PolicyAssignment | None, PolicyAssignment | None]] | None = None,
) -> RoutingPolicy:
    """The engine's `RoutingPolicy` for a validated `policy:` section.

    `neighbors` maps each neighbour's address to its own (import, export) assignments, None where it
    has none and follows the global one. Raises ValueError for an assignment naming an undefined
    policy (`PolicyConfig.assignment_problems` reports those during configuration validation).
    """
    sets = _Sets(policy.defined_sets)
    policies = {config.name: _policy(config, sets) for config in policy.policies}
    chains: dict[tuple[tuple[str, ...], str], PolicyChain] = {}

    def chain(assignment: PolicyAssignment | None) -> PolicyChain | None:
        if assignment is None:
            return None
        key = (assignment.policies, assignment.default)
        built = chains.get(key)
        if built is None:
            missing = [name for name in assignment.policies if name not in policies]
            if missing:
                raise ValueError(f"unknown policies {missing}; defined: {sorted(policies)}")
            # Neighbours with equal assignments share one compiled chain.
            built = chains[key] = PolicyChain(
                [policies[name] for name in assignment.policies], RouteDisposition(assignment.default)
            )
        return built

    neighbor_import: dict[str, PolicyChain] = {}
    neighbor_export: dict[str, PolicyChain] = {}
    for address, (import_assignment, export_assignment) in (neighbors or {}).items():
        if (import_chain := chain(import_assignment)) is not None:
            neighbor_import[address] = import_chain
        if (export_chain := chain(export_assignment)) is not None:
            neighbor_export[address] = export_chain
    return RoutingPolicy(
        global_import=chain(policy.import_),
        global_export=chain(policy.export),
        neighbor_import=neighbor_import,
        neighbor_export=neighbor_export,
    )
