"""Resolving names over the Loc-RIB: longest match, the capability index and globs (DESIGN §2).

The indexes are kept by the Rib as best paths change; these tests drive them only through the Rib
(announce, withdraw, originate, peer_down) and read them back.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.messages import AgentAttributes, Update
from agentmesh.rib import names as namespace
from agentmesh.rib.decision import Path
from agentmesh.rib.resolve import is_glob, longest_match
from agentmesh.rib.rib import Rib
from tests.support.routes import E1, E1_ASN, E2, E2_ASN, I1, announce, attrs, make_rib, withdraw

NAMES = [
    "acme.weather.forecast",
    "acme.weather.forecast.daily",
    "acme.weather.forecast.hourly",
    "acme.weather.forcast",
    "acme.weather.*",
    "acme.sales.forecast",
    "acme.echo",
    "acme.*",
    "other.echo",
    "other.deep.echo",
    "echo",
    "weatherAgent",
]


def _rib(names: list[str] = NAMES) -> Rib:
    rib = make_rib()
    rib.originate(names, AgentAttributes())
    return rib


def _loc(rib: Rib) -> dict[str, Path]:
    return dict(rib.loc_rib())


# -- longest match ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acme.weather.forecast", "acme.weather.forecast"),  # exact wins over the aggregate
        ("acme.weather.radar", "acme.weather.*"),
        ("acme.weather.radar.eu", "acme.weather.*"),  # the aggregate covers every depth below it
        ("acme.weather.forecast.weekly", "acme.weather.*"),  # a sibling exact name does not cover
        ("acme.sales.bot", "acme.*"),  # only the shorter aggregate covers it
        ("acme.weather.*", "acme.weather.*"),  # an aggregate resolves to itself
        ("acme.weather", "acme.*"),
        ("acme", None),  # `acme.*` covers names below acme, not acme itself
        ("other.x", None),
        ("Acme.echo", None),  # compared exactly, case-preserving
        ("weatheragent", None),
        ("weatherAgent", "weatherAgent"),
    ],
)
def test_longest_match(name: str, expected: str | None) -> None:
    assert longest_match(name, _loc(_rib())) == expected


def test_longest_match_follows_withdrawals() -> None:
    rib = _rib()
    rib.withdraw_local(["acme.weather.*"])
    assert longest_match("acme.weather.radar", _loc(rib)) == "acme.*"
    rib.withdraw_local(["acme.*"])
    assert longest_match("acme.weather.radar", _loc(rib)) is None


def test_longest_match_over_learned_aggregates() -> None:
    rib = make_rib()
    announce(rib, E1, ["acme.*"], attrs(E1_ASN))
    announce(rib, E2, ["acme.weather.*"], attrs(E2_ASN))
    assert longest_match("acme.weather.forecast", _loc(rib)) == "acme.weather.*"
    rib.peer_down(E2)
    assert longest_match("acme.weather.forecast", _loc(rib)) == "acme.*"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.b.c.d", ["a.b.c.*", "a.b.*", "a.*"]),
        ("a.b", ["a.*"]),
        ("a", []),
        ("a.b.*", ["a.*"]),  # an aggregate is not its own cover
        ("a.*", []),
        ("weather.forecast-eu_1", ["weather.*"]),
    ],
)
def test_covering_aggregates_longest_first(name: str, expected: list[str]) -> None:
    assert list(namespace.covering_aggregates(name)) == expected


def test_invalid_names_of_a_big_valid_batch_is_empty() -> None:
    batch = [f"org{i % 97}.team-{i % 13}.agent_{i}" for i in range(100_000)]
    batch += ["acme.weather.*", "a" * namespace.MAX_NAME_LENGTH, "x"]
    assert namespace.invalid_names(batch) == []
    assert namespace.invalid_names([]) == []


# -- capability index -------------------------------------------------------------------------------


def test_capability_index_follows_best_path_changes() -> None:
    rib = make_rib()
    name = "acme.weather.forecast"
    announce(rib, E1, [name], attrs(E1_ASN, capabilities=("weather", "forecast")))
    assert rib.index.by_capability("weather") == {name}
    assert rib.index.by_capability("forecast") == {name}
    # A worse path's tags are not indexed: the index is over best paths only.
    announce(rib, E2, [name], attrs(E2_ASN, 65010, capabilities=("radar",)))
    assert rib.index.by_capability("radar") == frozenset()
    # An iBGP path with a higher LOCAL_PREF becomes best: its tags replace the old ones.
    announce(rib, I1, [name], attrs(E1_ASN, 65010, 65011, local_pref=200, capabilities=("radar", "weather")))
    assert rib.index.by_capability("radar") == {name}
    assert rib.index.by_capability("weather") == {name}
    assert rib.index.by_capability("forecast") == frozenset()
    # Back to E1's path when I1's goes.
    withdraw(rib, I1, [name])
    assert rib.index.by_capability("forecast") == {name}
    assert rib.index.by_capability("radar") == frozenset()
    # E1 down: E2's path (radar) is best.
    rib.peer_down(E1)
    assert rib.index.by_capability("radar") == {name}
    assert rib.index.by_capability("weather") == frozenset()
    withdraw(rib, E2, [name])
    assert rib.index.by_capability("radar") == frozenset()


def test_capability_index_over_many_names_and_implicit_withdraw() -> None:
    rib = make_rib()
    names = [f"fleet.agent{i}" for i in range(50)]
    announce(rib, E1, names, attrs(E1_ASN, capabilities=("summarise",)))
    rib.originate(["local.one"], AgentAttributes(capabilities=("summarise", "translate")))
    assert rib.index.by_capability("summarise") == {*names, "local.one"}
    assert rib.index.by_capability("translate") == {"local.one"}
    announce(rib, E1, names[:10], attrs(E1_ASN, capabilities=("translate",)))  # implicit withdraw
    assert rib.index.by_capability("summarise") == {*names[10:], "local.one"}
    assert rib.index.by_capability("translate") == {*names[:10], "local.one"}
    rib.withdraw_local(["local.one"])
    withdraw(rib, E1, names[10:])
    assert rib.index.by_capability("summarise") == frozenset()
    assert rib.index.by_capability("translate") == set(names[:10])
    assert rib.index.by_capability("unknown") == frozenset()


def test_treat_as_withdraw_removes_names_from_the_indexes() -> None:
    rib = make_rib()
    announce(rib, E1, ["acme.echo"], attrs(E1_ASN, capabilities=("echo",)))
    rib.receive(E1, Update(attributes=attrs(E1_ASN, next_hop=""), announced=("acme.echo",)), 0.0)
    assert rib.index.by_capability("echo") == frozenset()
    assert rib.index.glob("**") == []


# -- globs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("acme.*.forecast", ["acme.sales.forecast", "acme.weather.forecast"]),
        (
            "acme.**",
            [
                "acme.*",
                "acme.echo",
                "acme.sales.forecast",
                "acme.weather.*",
                "acme.weather.forcast",
                "acme.weather.forecast",
                "acme.weather.forecast.daily",
                "acme.weather.forecast.hourly",
            ],
        ),
        ("*.echo", ["acme.echo", "other.echo"]),
        ("acme.weather.fore?ast", ["acme.weather.forecast"]),
        ("acme.weather.for[ce]*ast", ["acme.weather.forcast", "acme.weather.forecast"]),
        ("acme.weather.[!f]*", ["acme.weather.*"]),
        ("**", sorted(NAMES)),
        ("**.echo", ["acme.echo", "echo", "other.deep.echo", "other.echo"]),
        ("acme.**.daily", ["acme.weather.forecast.daily"]),
        ("acme.weather.forecast.*", ["acme.weather.forecast.daily", "acme.weather.forecast.hourly"]),
        ("acme.echo", ["acme.echo"]),  # no wildcard: the name itself
        ("acme.nothing", []),
        ("*", ["echo", "weatherAgent"]),
        ("weather*", ["weatherAgent"]),
        ("Weather*", []),  # case-sensitive, like names
        ("*.*.*.*", ["acme.weather.forecast.daily", "acme.weather.forecast.hourly"]),
    ],
)
def test_glob(pattern: str, expected: list[str]) -> None:
    assert _rib().index.glob(pattern) == expected


def test_glob_limit() -> None:
    found = _rib().index.glob("acme.**", limit=3)
    assert len(found) == 3
    assert found == sorted(found)
    assert set(found) <= set(_rib().index.glob("acme.**"))


def test_glob_follows_withdrawals_and_peer_down() -> None:
    rib = _rib()
    rib.withdraw_local(["acme.weather.forecast", "acme.weather.forecast.daily"])
    assert rib.index.glob("acme.weather.**") == [
        "acme.weather.*",
        "acme.weather.forcast",
        "acme.weather.forecast.hourly",
    ]
    assert rib.index.glob("acme.*.forecast") == ["acme.sales.forecast"]
    rib.withdraw_local(NAMES)
    assert rib.index.glob("**") == []
    announce(rib, E1, ["acme.echo", "acme.weather.forecast"], attrs(E1_ASN))
    assert rib.index.glob("acme.**") == ["acme.echo", "acme.weather.forecast"]
    rib.peer_down(E1)
    assert rib.index.glob("**") == []


def test_glob_is_unchanged_when_only_the_best_path_moves() -> None:
    rib = make_rib()
    announce(rib, E1, ["acme.echo"], attrs(E1_ASN))
    announce(rib, E2, ["acme.echo"], attrs(E2_ASN, 65010))
    withdraw(rib, E1, ["acme.echo"])
    assert rib.index.glob("**") == ["acme.echo"]
    withdraw(rib, E2, ["acme.echo"])
    assert rib.index.glob("**") == []


def test_glob_with_two_double_stars_lists_each_name_once() -> None:
    rib = make_rib()
    rib.originate(["acme.echo"], AgentAttributes())
    assert rib.index.glob("**.**") == ["acme.echo"]


def test_is_glob() -> None:
    assert is_glob("acme.*.forecast") and is_glob("a?") and is_glob("**") and is_glob("[ab]")
    assert not is_glob("acme.weather.*")  # an aggregate, not a glob
    assert not is_glob("acme.echo")


# -- property: the glob index agrees with a brute-force matcher ---------------------------------------


def _brute(pattern: list[str], labels: list[str]) -> bool:
    if not pattern:
        return not labels
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_brute(rest, labels[i:]) for i in range(len(labels) + 1))
    return bool(labels) and fnmatchcase(labels[0], head) and _brute(rest, labels[1:])


_LABELS = st.sampled_from(["a", "b", "ab", "ba", "c1", "c2"])
_NAME = st.lists(_LABELS, min_size=1, max_size=4).map(".".join)
_PATTERN_LABELS = st.sampled_from(["a", "b", "*", "?", "a*", "*b", "c[12]", "[!a]*", "c?"])


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    labels = draw(st.lists(_PATTERN_LABELS, min_size=1, max_size=4))
    for _ in range(draw(st.integers(0, 2))):
        labels.insert(draw(st.integers(0, len(labels))), "**")
    return ".".join(labels)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(_NAME, unique=True, max_size=25),
    gone=st.data(),
    pattern=_patterns(),
)
def test_glob_matches_brute_force(names: list[str], gone: st.DataObject, pattern: str) -> None:
    rib = make_rib(peers=[])
    rib.originate(names, AgentAttributes())
    withdrawn = gone.draw(st.lists(st.sampled_from(names), unique=True) if names else st.just([]))
    rib.withdraw_local(withdrawn)
    live = [n for n in names if n not in withdrawn]
    expected = sorted(n for n in live if _brute(pattern.split("."), n.split(".")))
    assert rib.index.glob(pattern) == expected
