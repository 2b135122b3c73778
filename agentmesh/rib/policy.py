"""Routing policy: what a node accepts from and sends to its neighbours, and how it changes the routes.

Theory of operation
-------------------

The model is OpenConfig's routing-policy model as GoBGP implements it:

* **Defined sets** name the things a condition tests against: agent names and globs (`NameSet`),
  capability tags (`CapabilitySet`), AS-path regular expressions (`AsPathSet`), communities
  (`CommunitySet`, RFC 1997), neighbour addresses (`NeighborSet`) and regions (`RegionSet`).
* A **statement** has conditions, all of which must hold for it to match, and actions: attribute
  changes (LOCAL_PREF, MED, communities, AS_PATH prepending, NEXT_HOP) and a route disposition,
  `accept`, `reject` or `none`.
* A **policy** is a named, ordered list of statements; a **chain** (`PolicyChain`) is an ordered list
  of policies followed by a default disposition, `accept` or `reject`.
* The **assignments** (`RoutingPolicy`) say which chain applies to routes learnt from a neighbour
  (import: between the Adj-RIB-In and the decision process, RFC 4271 §9.1) and to routes sent to it
  (export: between the Loc-RIB and the Adj-RIB-Out, RFC 4271 §9.1.3). A global assignment covers every
  neighbour; a neighbour's own assignment for a direction replaces the global one for that direction.

Evaluation walks the chain's statements in order, policy after policy, carrying the route along:

1. A statement whose conditions do not all match is skipped.
2. A statement that matches applies its attribute actions to the route. If its disposition is
   `accept` or `reject`, that decides the route and evaluation of the whole chain stops (the statement
   is *terminal*). With disposition `none` the modified route goes on to the next statement, whose
   conditions see the modified attributes.
3. When no statement was terminal, the chain's default disposition decides, and the route keeps the
   modifications of the statements that matched on the way.

Every verdict carries a trail: one `TrailStep` per statement that matched (policy, statement, outcome
and the actions it applied), then, if no statement was terminal, a step saying the default decided.
The trail is typed (DESIGN §4.6) so logs, metrics, the admin API and tests read the same reason;
`Verdict.describe()` renders it on one line.

Sets and conditions, precisely
------------------------------

* Name sets hold exact names, aggregates (`acme.*`) and globs, all matched with the semantics of
  `agentmesh.rib.resolve.glob_matches`: `*`, `?` and `[...]` match within one label, a `**` label any
  number of labels. An aggregate entry `acme.*` is then a glob too: it matches the aggregate route
  `acme.*` itself and every name exactly one label below `acme`. Names are assumed to follow the
  name grammar; the core refuses UPDATEs whose names do not (RFC 7606 §5.3) before policy sees them.
* AS-path regular expressions run (`re.search`) over the AS_PATH rendered as space-separated ASNs,
  first AS (the neighbour's) first: `65002 65003 65010`. As on other routers `_` stands for a boundary,
  the start, the end or a space, so `_65003_` matches the AS 65003 but not 650031; `^65002_` matches
  routes learnt from AS 65002, `_65010$` routes originated by AS 65010 and `^$` routes with an empty
  AS_PATH, i.e. originated in this AS (RFC 4271 §5.1.2).
* The origin AS is the last AS of the AS_PATH, the one that originated the route; for a route with an
  empty AS_PATH (locally originated, or from an iBGP neighbour of the same AS) it is the local AS.
* An absent MED counts as 0 and an absent LOCAL_PREF as 100 (RFC 4271 §9.1.2.2, the decision process
  does the same), in range conditions and in the `add`/`subtract` actions alike.
* `match` options follow OpenConfig's match-set-options: `any` (the route's value, or one of its
  values, is in the set), `invert` (none is) and, for the multi-valued capabilities and communities,
  `all` (every member of the set is present on the route). GoBGP's own `all` for communities reads
  the other way round (every community of the route is in the set); "the route carries the whole set"
  is the reading that is useful for capability tags, and one meaning for both keeps policies readable.

Speed
-----

Routes arrive in UPDATEs that carry many names sharing one attribute set, so `evaluate_many` takes
the names of one UPDATE together. Every condition except a name condition depends only on the
attributes and the neighbour, so it is evaluated once per group of names that share them, not once
per name. A name condition splits the group into the names it matches and the rest, each going on
with its own attributes and trail; a name set checks a whole group at C speed (a frozenset
intersection for exact names, one multi-line regular expression over the joined names for globs and
aggregates). Everything is compiled when the chain is built: regular expressions, sets, ranges, the
trail steps (shared constants) and each statement's actions. While a chain runs, actions change a
mutable draft of the attributes; the verdict's PathAttributes is made once at the end, and is the
very input object when nothing changed. Equal modified sets within one `evaluate_many` call are one
object, which the core's attribute interning then finds at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final

from agentmesh.bgp.messages import PathAttributes
from agentmesh.rib.attributes import DEFAULT_LOCAL_PREF, MAX_AS_PATH, NO_ADVERTISE, NO_EXPORT
from agentmesh.rib.resolve import glob_matches

__all__ = [
    "UINT32_MAX",
    "WELL_KNOWN_COMMUNITIES",
    "Action",
    "AddCommunities",
    "AddLocalPref",
    "AddMed",
    "AsPathCondition",
    "AsPathLengthCondition",
    "AsPathSet",
    "CapabilityCondition",
    "CapabilitySet",
    "CommunityCondition",
    "CommunitySet",
    "Condition",
    "HealthCondition",
    "LocalPrefCondition",
    "MatchOption",
    "MedCondition",
    "NameCondition",
    "NameSet",
    "NeighborCondition",
    "NeighborSet",
    "OriginAsCondition",
    "Policy",
    "PolicyChain",
    "PrependAsPath",
    "RegionCondition",
    "RegionSet",
    "RemoveCommunities",
    "ReplaceCommunities",
    "RouteContext",
    "RouteDisposition",
    "RoutingPolicy",
    "SetLocalPref",
    "SetMed",
    "SetNextHopSelf",
    "Statement",
    "StepOutcome",
    "SubtractMed",
    "TrailStep",
    "Verdict",
    "as_path_regex",
    "as_path_text",
    "format_community",
    "render_trail",
]

#: LOCAL_PREF and MED are 4-octet unsigned values (RFC 4271 §4.3); arithmetic on them clamps to this.
UINT32_MAX: Final = 0xFFFF_FFFF

#: RFC 1997's well-known communities by the names policies use for them.
WELL_KNOWN_COMMUNITIES: Final[Mapping[str, int]] = {"no-export": NO_EXPORT, "no-advertise": NO_ADVERTISE}
_COMMUNITY_NAMES: Final = {value: name for name, value in WELL_KNOWN_COMMUNITIES.items()}


def format_community(value: int) -> str:
    """A community as text: its well-known name, else `ASN:value` (RFC 1997 §"Community Attribute")."""
    name = _COMMUNITY_NAMES.get(value)
    return name if name is not None else f"{value >> 16}:{value & 0xFFFF}"


# --------------------------------------------------------------------------- enums


class MatchOption(Enum):
    """How a set condition matches (OpenConfig match-set-options)."""

    ANY = "any"
    ALL = "all"
    INVERT = "invert"


class RouteDisposition(Enum):
    """A statement's route action: `accept`/`reject` end the chain; `none` continues with the next."""

    ACCEPT = "accept"
    REJECT = "reject"
    NONE = "none"


class StepOutcome(Enum):
    """What one step of a trail did."""

    ACCEPTED = "accepted"  # a statement matched with disposition accept: the chain stopped
    REJECTED = "rejected"  # a statement matched with disposition reject: the chain stopped
    CONTINUED = "continued"  # a statement matched with disposition none: its actions applied, go on
    DEFAULT_ACCEPTED = "default_accepted"  # no statement was terminal: the default accepted
    DEFAULT_REJECTED = "default_rejected"  # no statement was terminal: the default rejected


# --------------------------------------------------------------------------- defined sets


@dataclass(frozen=True, slots=True)
class NameSet:
    """Agent names, aggregates (`a.b.*`) and globs (`*`, `?`, `[...]` in a label; `**` across labels)."""

    name: str
    entries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CapabilitySet:
    """Capability tags (AgentAttributes.capabilities)."""

    name: str
    tags: frozenset[str]


@dataclass(frozen=True, slots=True)
class AsPathSet:
    """AS-path regular expressions, `_` meaning a boundary (see `as_path_regex`)."""

    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommunitySet:
    """32-bit communities (RFC 1997)."""

    name: str
    values: frozenset[int]


@dataclass(frozen=True, slots=True)
class NeighborSet:
    """Neighbour addresses, `host:port` in the configuration's canonical form."""

    name: str
    addresses: frozenset[str]


@dataclass(frozen=True, slots=True)
class RegionSet:
    """Regions (AgentAttributes.region)."""

    name: str
    regions: frozenset[str]


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True, slots=True)
class NameCondition:
    """The route's name is in the set (`any`) or not (`invert`). The only per-name condition."""

    names: NameSet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class CapabilityCondition:
    """any: the agent has a tag of the set; all: it has every tag of the set; invert: it has none."""

    capabilities: CapabilitySet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class AsPathCondition:
    """The rendered AS_PATH matches a regular expression of the set (`any`) or none of them (`invert`)."""

    as_paths: AsPathSet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class AsPathLengthCondition:
    """The number of ASes on the AS_PATH is within [min, max]; an absent bound is open."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class OriginAsCondition:
    """The origin AS (last on the AS_PATH, or the local AS for an empty one) is one of `asns`."""

    asns: frozenset[int]


@dataclass(frozen=True, slots=True)
class CommunityCondition:
    """any: the route carries a community of the set; all: every one of them; invert: none of them."""

    communities: CommunitySet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class NeighborCondition:
    """The neighbour (learnt from on import, sent to on export) is in the set (`any`) or not (`invert`)."""

    neighbors: NeighborSet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class RegionCondition:
    """The agent's region is in the set (`any`) or not (`invert`)."""

    regions: RegionSet
    match: MatchOption = MatchOption.ANY


@dataclass(frozen=True, slots=True)
class MedCondition:
    """MED within [min, max]; an absent MED counts as 0 (RFC 4271 §9.1.2.2)."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class LocalPrefCondition:
    """LOCAL_PREF within [min, max]; an absent LOCAL_PREF counts as 100, as in the decision process."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class HealthCondition:
    """The backend's health is within every bound given (latency, error rate, load at most ...)."""

    max_latency_ms: float | None = None
    max_error_rate: float | None = None
    max_load: float | None = None


Condition = (
    NameCondition
    | CapabilityCondition
    | AsPathCondition
    | AsPathLengthCondition
    | OriginAsCondition
    | CommunityCondition
    | NeighborCondition
    | RegionCondition
    | MedCondition
    | LocalPrefCondition
    | HealthCondition
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SetLocalPref:
    """Set LOCAL_PREF (RFC 4271 §5.1.5), the degree of preference of §9.1.1: higher wins, first of all."""

    value: int

    def __str__(self) -> str:
        return f"local_pref={self.value}"


@dataclass(frozen=True, slots=True)
class AddLocalPref:
    """Add `amount` (may be negative) to LOCAL_PREF, absent counting as 100, clamped to 0..2^32-1."""

    amount: int

    def __str__(self) -> str:
        return f"local_pref{self.amount:+d}"


@dataclass(frozen=True, slots=True)
class SetMed:
    """Set MULTI_EXIT_DISC (RFC 4271 §5.1.4): lower is preferred (§9.1.2.2 c)."""

    value: int

    def __str__(self) -> str:
        return f"med={self.value}"


@dataclass(frozen=True, slots=True)
class AddMed:
    """Add to MED, absent counting as 0, clamped to 2^32-1."""

    amount: int

    def __str__(self) -> str:
        return f"med+{self.amount}"


@dataclass(frozen=True, slots=True)
class SubtractMed:
    """Subtract from MED, absent counting as 0, clamped to 0."""

    amount: int

    def __str__(self) -> str:
        return f"med-{self.amount}"


def _community_list(values: tuple[int, ...]) -> str:
    return "[" + " ".join(map(format_community, values)) + "]"


@dataclass(frozen=True, slots=True)
class AddCommunities:
    """Add communities the route does not carry yet, after the ones it has."""

    values: tuple[int, ...]

    def __str__(self) -> str:
        return f"communities+{_community_list(self.values)}"


@dataclass(frozen=True, slots=True)
class RemoveCommunities:
    """Remove these communities from the route."""

    values: tuple[int, ...]

    def __str__(self) -> str:
        return f"communities-{_community_list(self.values)}"


@dataclass(frozen=True, slots=True)
class ReplaceCommunities:
    """Replace the route's communities with these (an empty tuple strips them all)."""

    values: tuple[int, ...]

    def __str__(self) -> str:
        return f"communities={_community_list(self.values)}"


@dataclass(frozen=True, slots=True)
class PrependAsPath:
    """Prepend an AS `times` times (RFC 4271 §5.1.2): the local AS unless `asn` is given.

    A longer AS_PATH makes the route less preferred by every AS downstream (decision step 3).
    The result never exceeds the node's AS_PATH limit, so peers never see a malformed path (RFC 7606).
    """

    times: int
    asn: int | None = None

    def __str__(self) -> str:
        return f"as_path_prepend {'local AS' if self.asn is None else f'AS{self.asn}'} x{self.times}"


@dataclass(frozen=True, slots=True)
class SetNextHopSelf:
    """Set NEXT_HOP to the node's own address, so calls are forwarded through it (RFC 4271 §5.1.3)."""

    def __str__(self) -> str:
        return "next_hop=self"


Action = (
    SetLocalPref
    | AddLocalPref
    | SetMed
    | AddMed
    | SubtractMed
    | AddCommunities
    | RemoveCommunities
    | ReplaceCommunities
    | PrependAsPath
    | SetNextHopSelf
)


# --------------------------------------------------------------------------- statements and policies


@dataclass(frozen=True, slots=True)
class Statement:
    """Conditions (all must match), actions applied in order, and the route disposition."""

    name: str
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()
    disposition: RouteDisposition = RouteDisposition.NONE


@dataclass(frozen=True, slots=True)
class Policy:
    """A named, ordered list of statements."""

    name: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class RouteContext:
    """Who the route is from or to; set by the caller for each evaluation.

    `neighbor` is the peer the route was learnt from (import) or is to be sent to (export), in the
    canonical `host:port` form; "" when there is none, e.g. a route originated by this node.
    """

    neighbor: str
    neighbor_asn: int
    local_asn: int
    local_next_hop: str


# --------------------------------------------------------------------------- the trail


@dataclass(frozen=True, slots=True)
class TrailStep:
    """One step of a verdict's reasoning: a statement that matched, or the default that decided."""

    outcome: StepOutcome
    policy: str = ""  # "" for a default step
    statement: str = ""
    actions: tuple[Action, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.outcome in (StepOutcome.DEFAULT_ACCEPTED, StepOutcome.DEFAULT_REJECTED)

    def __str__(self) -> str:
        if self.outcome is StepOutcome.DEFAULT_ACCEPTED:
            return "default accept"
        if self.outcome is StepOutcome.DEFAULT_REJECTED:
            return "default reject"
        text = f"{self.policy}/{self.statement} {self.outcome.value}"
        if self.actions:
            text += " [" + ", ".join(map(str, self.actions)) + "]"
        return text


def render_trail(trail: Iterable[TrailStep]) -> str:
    """A trail on one line: `p1/s1 continued [local_pref=200]; p2/s4 accepted`."""
    return "; ".join(map(str, trail))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a chain for a route: accepted or not, the (possibly modified) attributes, why."""

    accepted: bool
    attrs: PathAttributes  # the very input object when no action changed anything
    trail: tuple[TrailStep, ...]

    @property
    def decided_by_default(self) -> bool:
        return bool(self.trail) and self.trail[-1].is_default

    def describe(self) -> str:
        """One line for logs and the CLI: `rejected by p/s: p0/s1 continued [med+10]; p/s rejected`."""
        verb = "accepted" if self.accepted else "rejected"
        if self.decided_by_default:
            how = "by default"
        else:
            last = self.trail[-1]
            how = f"by {last.policy}/{last.statement}"
        return f"{verb} {how}: {render_trail(self.trail)}"

    def __str__(self) -> str:
        return self.describe()


# --------------------------------------------------------------------------- AS-path expressions

# `_` in an AS-path expression: the start, the end or the space between two ASNs. It consumes the
# space, so `_65002_65003_` still matches "65002 65003" (the middle `_` is the one space).
_AS_PATH_BOUNDARY: Final = "(?:^| |$)"


def as_path_text(as_path: tuple[int, ...]) -> str:
    """The AS_PATH as AS-path expressions see it: ASNs separated by single spaces, neighbour first."""
    return " ".join(map(str, as_path))


def as_path_regex(expression: str) -> re.Pattern[str]:
    """Compile an AS-path expression: a Python regular expression in which `_` means a boundary.

    `_` is translated outside character classes only; an escaped `\\_` stays a literal underscore
    (which never occurs in an AS path). Raises `re.error` for an invalid expression.
    """
    out: list[str] = []
    i, end = 0, len(expression)
    while i < end:
        char = expression[i]
        if char == "\\":
            out.append(expression[i : i + 2])
            i += 2
        elif char == "[":
            # Copy a character class verbatim: `]` right after `[` or `[^` is a literal member.
            j = i + 1
            if j < end and expression[j] == "^":
                j += 1
            if j < end and expression[j] == "]":
                j += 1
            while j < end and expression[j] != "]":
                j += 2 if expression[j] == "\\" else 1
            out.append(expression[i : j + 1])  # an unterminated class stays so and fails to compile
            i = j + 1
        elif char == "_":
            out.append(_AS_PATH_BOUNDARY)
            i += 1
        else:
            out.append(char)
            i += 1
    return re.compile("".join(out))


# --------------------------------------------------------------------------- name matching

_WILDCARD_CHARS: Final = frozenset("*?[")
# The label syntax the regular-expression fast path translates exactly like fnmatch does: label
# characters, `*`, `?` and bracket classes of label characters and ranges. Anything else (which the
# configuration never produces) is matched by `glob_matches` itself.
_FAST_LABEL = re.compile(r"(?:[A-Za-z0-9_-]|\*|\?|\[!?(?:[A-Za-z0-9_](?:-[A-Za-z0-9_])?)+\])+")
_CLASS = re.compile(r"\[(!?)([^\]]+)\]")
_RANGE = re.compile(r"(.)-(.)")


def _label_regex(label: str) -> str | None:
    """A label glob as a regular expression over one label of a line, or None when not translatable."""
    if _FAST_LABEL.fullmatch(label) is None:
        return None
    out: list[str] = []
    i = 0
    while i < len(label):
        char = label[i]
        if char == "*":
            out.append(r"[^.\n]*")
        elif char == "?":
            out.append(r"[^.\n]")
        elif char == "[":
            found = _CLASS.match(label, i)
            assert found is not None  # guaranteed by _FAST_LABEL
            negate, members = found.groups()
            if any(lo > hi for lo, hi in _RANGE.findall(members)):
                return None  # fnmatch drops an empty range; leave such oddities to it
            # A negated class must not cross into the next label or line.
            out.append(f"[^{members}.\\n]" if negate else f"[{members}]")
            i = found.end()
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _glob_regex(pattern: str) -> str | None:
    r"""A glob as a regular expression over "." + name (a line of `_lines`), or None if not translatable.

    Every label of the line then starts with a dot, so a label glob L becomes `\.L`. A `**` label,
    any number of whole labels, becomes "at a label boundary, anything up to another boundary": the
    lookahead checks the boundary before it, and what follows it (`\.` or the end of the line) the
    one after. That is `glob_matches`'s reading for names of non-empty labels, and unlike the
    literal `(?:\.[^.\n]+)*` it needs no group repetition, which the regular expression engine runs
    several times slower.
    """
    parts: list[str] = []
    for label in pattern.split("."):
        if label == "**":
            parts.append(r"(?=[.\n]|\Z)[^\n]*")
            continue
        translated = _label_regex(label)
        if translated is None:
            return None
        parts.append(r"\." + translated)
    return "".join(parts)


class _NameMatcher:
    """A compiled NameSet: a frozenset for exact names, one regular expression for the rest."""

    __slots__ = ("exact", "pattern", "slow")

    def __init__(self, entries: Iterable[str]) -> None:
        exact: set[str] = set()
        alternatives: list[str] = []
        slow: list[str] = []
        for entry in entries:
            if _WILDCARD_CHARS.isdisjoint(entry):
                exact.add(entry)
                continue
            translated = _glob_regex(entry)
            if translated is None:
                slow.append(entry)
            else:
                alternatives.append(translated)
        self.exact = frozenset(exact)
        # Lines start with "\n." (see _lines): a pattern that starts with a literal lets the regular
        # expression engine skip from line to line instead of trying every position, as `^` would.
        self.pattern = re.compile(r"\n(?:" + "|".join(alternatives) + r")(?=\n|\Z)") if alternatives else None
        self.slow = tuple(slow)

    @property
    def needs_text(self) -> bool:
        return self.pattern is not None

    def matches(self, name: str) -> bool:
        if name in self.exact:
            return True
        if self.pattern is not None and self.pattern.fullmatch("\n." + name) is not None:
            return True
        return any(glob_matches(glob, name) for glob in self.slow)

    def matching(self, names: list[str], text: str) -> set[str]:
        """The names of a group that match; `text` is the group as `_lines` writes it."""
        found = set(self.exact.intersection(names))  # copies only the hits, usually none
        if self.pattern is not None:
            found.update(line[2:] for line in self.pattern.findall(text))
        for glob in self.slow:
            found.update(name for name in names if glob_matches(glob, name))
        return found


def _lines(names: list[str]) -> str:
    """The names as lines for a name matcher's pattern: "\n." before each name."""
    return "\n." + "\n.".join(names)


# --------------------------------------------------------------------------- compilation


class _Draft:
    """A route's attributes while a chain runs over it.

    Conditions read it as they would read PathAttributes; actions change its changeable fields in
    place. A route that several statements modify then costs one PathAttributes, made when the
    verdict is, instead of one per statement (`dataclasses.replace` is most of an evaluation's cost).
    """

    __slots__ = (
        "_text",
        "_text_of",
        "agent",
        "as_path",
        "base",
        "communities",
        "local_pref",
        "med",
        "next_hop",
    )

    def __init__(self, base: PathAttributes) -> None:
        self.base = base
        self.agent = base.agent
        self.as_path = base.as_path
        self._text_of: tuple[int, ...] | None = None  # the AS_PATH `_text` renders
        self._text = ""
        self.next_hop = base.next_hop
        self.med = base.med
        self.local_pref = base.local_pref
        self.communities = base.communities

    def as_path_text(self) -> str:
        """The AS_PATH rendered for AS-path expressions, once per path however many sets test it."""
        if self._text_of is not self.as_path:
            self._text, self._text_of = as_path_text(self.as_path), self.as_path
        return self._text

    def copy(self) -> _Draft:
        twin = _Draft(self.base)
        twin.as_path, twin.next_hop, twin.med = self.as_path, self.next_hop, self.med
        twin.local_pref, twin.communities = self.local_pref, self.communities
        return twin

    def result(self) -> PathAttributes:
        """The attributes as modified: the base object itself when nothing differs from it."""
        base = self.base
        if (
            self.local_pref == base.local_pref
            and self.med == base.med
            and self.communities == base.communities
            and self.as_path == base.as_path
            and self.next_hop == base.next_hop
        ):
            return base
        return replace(
            base,
            local_pref=self.local_pref,
            med=self.med,
            communities=self.communities,
            as_path=self.as_path,
            next_hop=self.next_hop,
        )


_AttrTest = Callable[[_Draft, RouteContext], bool]
_Apply = Callable[[_Draft, RouteContext], None]


def _in_range(low: int | None, high: int | None) -> Callable[[int], bool]:
    lo = -1 if low is None else low
    hi = UINT32_MAX + 1 if high is None else high
    return lambda value: lo <= value <= hi


def _either(test: _AttrTest, match: MatchOption, kind: str) -> _AttrTest:
    """`test` for ANY, its negation for INVERT; ALL has no meaning for a single-valued attribute."""
    if match is MatchOption.ANY:
        return test
    if match is MatchOption.INVERT:
        return lambda attrs, context: not test(attrs, context)
    raise ValueError(f"match option {match.value!r} does not apply to a {kind} condition; use any or invert")


_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _as_path_search(patterns: Sequence[str]) -> Callable[[str], object]:
    """One search for a set of AS-path expressions: any of them matches.

    The expressions are joined into one alternation, one scan instead of one per expression,
    unless a numbered or named backreference would then point at another expression's group.
    """
    regexes = [as_path_regex(pattern) for pattern in patterns]
    if len(regexes) == 1:
        return regexes[0].search
    if not any(_BACKREFERENCE.search(pattern) or "(?P<" in pattern for pattern in patterns):
        return re.compile("|".join(f"(?:{regex.pattern})" for regex in regexes)).search

    def any_search(text: str) -> object:
        return next((found for regex in regexes if (found := regex.search(text)) is not None), None)

    return any_search


def _compile_condition(condition: Condition) -> _AttrTest:
    """A name-independent condition as a predicate over (attributes, context)."""
    if isinstance(condition, CapabilityCondition):
        tags = condition.capabilities.tags
        if condition.match is MatchOption.ALL:
            return lambda attrs, _: tags.issubset(attrs.agent.capabilities)
        if condition.match is MatchOption.INVERT:
            return lambda attrs, _: tags.isdisjoint(attrs.agent.capabilities)
        return lambda attrs, _: not tags.isdisjoint(attrs.agent.capabilities)
    if isinstance(condition, CommunityCondition):
        values = condition.communities.values
        if condition.match is MatchOption.ALL:
            return lambda attrs, _: values.issubset(attrs.communities)
        if condition.match is MatchOption.INVERT:
            return lambda attrs, _: values.isdisjoint(attrs.communities)
        return lambda attrs, _: not values.isdisjoint(attrs.communities)
    if isinstance(condition, AsPathCondition):
        search = _as_path_search(condition.as_paths.patterns)

        def as_path_matches(attrs: _Draft, _: RouteContext) -> bool:
            return search(attrs.as_path_text()) is not None

        return _either(as_path_matches, condition.match, "AS-path")
    if isinstance(condition, AsPathLengthCondition):
        length_ok = _in_range(condition.min, condition.max)
        return lambda attrs, _: length_ok(len(attrs.as_path))
    if isinstance(condition, OriginAsCondition):
        asns = condition.asns
        return lambda attrs, context: (attrs.as_path[-1] if attrs.as_path else context.local_asn) in asns
    if isinstance(condition, NeighborCondition):
        addresses = condition.neighbors.addresses
        return _either(lambda _, context: context.neighbor in addresses, condition.match, "neighbour")
    if isinstance(condition, RegionCondition):
        regions = condition.regions.regions
        return _either(lambda attrs, _: attrs.agent.region in regions, condition.match, "region")
    if isinstance(condition, MedCondition):
        med_ok = _in_range(condition.min, condition.max)
        return lambda attrs, _: med_ok(attrs.med or 0)
    if isinstance(condition, LocalPrefCondition):
        local_pref_ok = _in_range(condition.min, condition.max)
        return lambda attrs, _: local_pref_ok(
            DEFAULT_LOCAL_PREF if attrs.local_pref is None else attrs.local_pref
        )
    if isinstance(condition, HealthCondition):
        inf = float("inf")
        max_latency = inf if condition.max_latency_ms is None else condition.max_latency_ms
        max_errors = inf if condition.max_error_rate is None else condition.max_error_rate
        max_load = inf if condition.max_load is None else condition.max_load

        def healthy(attrs: _Draft, _: RouteContext) -> bool:
            health = attrs.agent.health
            return (
                health.latency_ms <= max_latency
                and health.error_rate <= max_errors
                and health.load <= max_load
            )

        return healthy
    raise TypeError(f"not a name-independent condition: {condition!r}")


def _clamp(value: int) -> int:
    return 0 if value < 0 else UINT32_MAX if value > UINT32_MAX else value


def _compile_actions(actions: tuple[Action, ...]) -> _Apply | None:
    """A statement's actions as one function changing a draft in order."""
    if not actions:
        return None

    def apply(draft: _Draft, context: RouteContext) -> None:
        local_pref, med = draft.local_pref, draft.med
        communities, as_path, next_hop = draft.communities, draft.as_path, draft.next_hop
        for action in actions:
            if isinstance(action, SetLocalPref):
                local_pref = action.value
            elif isinstance(action, AddLocalPref):
                base = DEFAULT_LOCAL_PREF if local_pref is None else local_pref
                local_pref = _clamp(base + action.amount)
            elif isinstance(action, SetMed):
                med = action.value
            elif isinstance(action, AddMed):
                med = _clamp((med or 0) + action.amount)
            elif isinstance(action, SubtractMed):
                med = _clamp((med or 0) - action.amount)
            elif isinstance(action, AddCommunities):
                added = tuple(dict.fromkeys(v for v in action.values if v not in communities))
                communities = communities + added
            elif isinstance(action, RemoveCommunities):
                communities = tuple(v for v in communities if v not in action.values)
            elif isinstance(action, ReplaceCommunities):
                communities = tuple(dict.fromkeys(action.values))
            elif isinstance(action, PrependAsPath):
                asn = context.local_asn if action.asn is None else action.asn
                times = min(action.times, MAX_AS_PATH - len(as_path))
                if times > 0:
                    as_path = (asn,) * times + as_path
            else:
                next_hop = context.local_next_hop
        draft.local_pref, draft.med = local_pref, med
        draft.communities, draft.as_path, draft.next_hop = communities, as_path, next_hop

    return apply


_STEP_OUTCOMES: Final = {
    RouteDisposition.ACCEPT: StepOutcome.ACCEPTED,
    RouteDisposition.REJECT: StepOutcome.REJECTED,
    RouteDisposition.NONE: StepOutcome.CONTINUED,
}


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement ready to run: predicates, name matchers, the action function and its trail step."""

    test: _AttrTest | None  # every name-independent condition at once; None: nothing to test
    name_tests: tuple[tuple[_NameMatcher, bool], ...]  # (matcher, invert), for groups of names
    name_test: Callable[[str], bool] | None  # the same for one name
    apply: _Apply | None
    terminal: bool
    accepts: bool
    step: TrailStep = field(compare=False)


def _all_of(tests: Sequence[_AttrTest]) -> _AttrTest | None:
    if len(tests) <= 1:
        return tests[0] if tests else None
    frozen = tuple(tests)

    # Plain loops rather than all() over a generator: these run for every statement of every
    # evaluation, and a generator per call costs more than the tests themselves.
    def every(attrs: _Draft, context: RouteContext) -> bool:
        for test in frozen:  # noqa: SIM110
            if not test(attrs, context):
                return False
        return True

    return every


def _one_name_test(name_tests: tuple[tuple[_NameMatcher, bool], ...]) -> Callable[[str], bool] | None:
    if not name_tests:
        return None

    def matches(name: str) -> bool:
        for matcher, invert in name_tests:  # noqa: SIM110 (a plain loop, as in _all_of)
            if matcher.matches(name) is invert:
                return False
        return True

    return matches


def _compile_statement(policy: str, statement: Statement) -> _Compiled:
    tests: list[_AttrTest] = []
    name_tests: list[tuple[_NameMatcher, bool]] = []
    for condition in statement.conditions:
        if isinstance(condition, NameCondition):
            if condition.match is MatchOption.ALL:
                raise ValueError("match option 'all' does not apply to a name condition; use any or invert")
            name_tests.append((_NameMatcher(condition.names.entries), condition.match is MatchOption.INVERT))
        else:
            tests.append(_compile_condition(condition))
    disposition = statement.disposition
    return _Compiled(
        test=_all_of(tests),
        name_tests=tuple(name_tests),
        name_test=_one_name_test(tuple(name_tests)),
        apply=_compile_actions(statement.actions),
        terminal=disposition is not RouteDisposition.NONE,
        accepts=disposition is RouteDisposition.ACCEPT,
        step=TrailStep(_STEP_OUTCOMES[disposition], policy, statement.name, statement.actions),
    )


_DEFAULT_STEPS: Final = {
    True: TrailStep(StepOutcome.DEFAULT_ACCEPTED),
    False: TrailStep(StepOutcome.DEFAULT_REJECTED),
}


# --------------------------------------------------------------------------- chains


class PolicyChain:
    """Policies in order and a default disposition, compiled for evaluation."""

    __slots__ = (
        "_accept_by_default",
        "_default_step",
        "_statements",
        "default",
        "name_dependent",
        "policies",
    )

    def __init__(
        self, policies: Sequence[Policy], default: RouteDisposition = RouteDisposition.ACCEPT
    ) -> None:
        if default is RouteDisposition.NONE:
            raise ValueError("a chain's default must be accept or reject")
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.default = default
        self._statements = tuple(
            _compile_statement(policy.name, statement)
            for policy in self.policies
            for statement in policy.statements
        )
        self._accept_by_default = default is RouteDisposition.ACCEPT
        self._default_step = _DEFAULT_STEPS[self._accept_by_default]
        #: Whether any statement tests the name: if not, one evaluation serves every name of an UPDATE.
        self.name_dependent: bool = any(compiled.name_tests for compiled in self._statements)

    def __repr__(self) -> str:
        names = ", ".join(policy.name for policy in self.policies)
        return f"PolicyChain([{names}], default={self.default.value})"

    def evaluate(self, name: str, attrs: PathAttributes, context: RouteContext) -> Verdict:
        """The verdict for one route."""
        draft = _Draft(attrs)
        trail: list[TrailStep] = []
        for compiled in self._statements:
            if compiled.test is not None and not compiled.test(draft, context):
                continue
            if compiled.name_test is not None and not compiled.name_test(name):
                continue
            if compiled.apply is not None:
                compiled.apply(draft, context)
            trail.append(compiled.step)
            if compiled.terminal:
                return Verdict(compiled.accepts, draft.result(), tuple(trail))
        trail.append(self._default_step)
        return Verdict(self._accept_by_default, draft.result(), tuple(trail))

    def evaluate_many(
        self, names: Sequence[str], attrs: PathAttributes, context: RouteContext
    ) -> list[tuple[Verdict, list[str]]]:
        """Verdicts for names sharing one attribute set, each with the names it applies to.

        Equal to `evaluate` name by name, grouped: names with the same outcome (acceptance,
        attributes and trail) share one Verdict, and equal modified attribute sets share one object.
        """
        if not names:
            return []
        outcomes: dict[tuple[bool, int, tuple[TrailStep, ...]], tuple[Verdict, list[str]]] = {}
        canonical: dict[PathAttributes, PathAttributes] = {}

        def decide(accepted: bool, draft: _Draft, group: list[str], trail: tuple[TrailStep, ...]) -> None:
            final = draft.result()
            if final is not attrs:
                if not canonical:
                    canonical[attrs] = attrs  # a set modified back to the input is the input
                final = canonical.setdefault(final, final)
            key = (accepted, id(final), trail)
            found = outcomes.get(key)
            if found is None:
                outcomes[key] = (Verdict(accepted, final, trail), group)
            else:
                found[1].extend(group)

        statements = self._statements
        count = len(statements)
        # A work list of groups still being evaluated: (next statement, attributes so far, names,
        # their text for the glob matcher or None until needed, trail so far).
        work: list[tuple[int, _Draft, list[str], str | None, tuple[TrailStep, ...]]] = [
            (0, _Draft(attrs), list(names), None, ())
        ]
        while work:
            index, current, group, text, trail = work.pop()
            while index < count:
                compiled = statements[index]
                index += 1
                if compiled.test is not None and not compiled.test(current, context):
                    continue
                matched = True
                for matcher, invert in compiled.name_tests:
                    if matcher.needs_text and text is None:
                        text = _lines(group)
                    found = matcher.matching(group, text or "")
                    if invert:
                        hit = [name for name in group if name not in found] if found else group
                    else:
                        hit = [name for name in group if name in found] if found else []
                    if not hit:
                        matched = False  # the whole group goes on to the next statement
                        break
                    if len(hit) < len(group):
                        # Split: the names this statement does not match go on from the next
                        # statement with the attributes and trail they had.
                        miss = [name for name in group if (name in found) is invert]
                        work.append((index, current.copy(), miss, None, trail))
                        group, text = hit, None
                if not matched:
                    continue
                if compiled.apply is not None:
                    compiled.apply(current, context)
                trail = (*trail, compiled.step)
                if compiled.terminal:
                    decide(compiled.accepts, current, group, trail)
                    break
            else:
                decide(self._accept_by_default, current, group, (*trail, self._default_step))
        return list(outcomes.values())


class RoutingPolicy:
    """Which chain applies to which neighbour, in each direction.

    The global chain of a direction applies to every neighbour without its own chain for that
    direction. `None` means no policy at all: the route passes unchanged, with no trail.
    Neighbours are keyed by their canonical `host:port` address.
    """

    __slots__ = ("global_export", "global_import", "neighbor_export", "neighbor_import")

    def __init__(
        self,
        *,
        global_import: PolicyChain | None = None,
        global_export: PolicyChain | None = None,
        neighbor_import: Mapping[str, PolicyChain] | None = None,
        neighbor_export: Mapping[str, PolicyChain] | None = None,
    ) -> None:
        self.global_import = global_import
        self.global_export = global_export
        self.neighbor_import: Mapping[str, PolicyChain] = dict(neighbor_import or {})
        self.neighbor_export: Mapping[str, PolicyChain] = dict(neighbor_export or {})

    def import_chain(self, neighbor: str) -> PolicyChain | None:
        """The chain for routes learnt from `neighbor`, or None to accept them unchanged."""
        return self.neighbor_import.get(neighbor, self.global_import)

    def export_chain(self, neighbor: str) -> PolicyChain | None:
        """The chain for routes sent to `neighbor`, or None to send them unchanged."""
        return self.neighbor_export.get(neighbor, self.global_export)

    def with_neighbor(
        self, neighbor: str, import_chain: PolicyChain | None, export_chain: PolicyChain | None
    ) -> RoutingPolicy:
        """A copy in which `neighbor` has these chains of its own (None: it follows the global one)."""
        imports = {key: chain for key, chain in self.neighbor_import.items() if key != neighbor}
        exports = {key: chain for key, chain in self.neighbor_export.items() if key != neighbor}
        if import_chain is not None:
            imports[neighbor] = import_chain
        if export_chain is not None:
            exports[neighbor] = export_chain
        return RoutingPolicy(
            global_import=self.global_import,
            global_export=self.global_export,
            neighbor_import=imports,
            neighbor_export=exports,
        )

    def __repr__(self) -> str:
        return (
            f"RoutingPolicy(global_import={self.global_import!r}, global_export={self.global_export!r},"
            f" neighbor_import={dict(self.neighbor_import)!r},"
            f" neighbor_export={dict(self.neighbor_export)!r})"
        )
