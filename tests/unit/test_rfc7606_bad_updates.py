"""RFC 7606 revised error handling for UPDATEs, as `Rib.receive` applies it.

* Malformed path attributes (`Update.attribute_error` from the decoder, or `attributes.malformation`)
  are treat-as-withdraw (§2): the announced names are withdrawn, reported in `Received.dropped`, and
  the session stays up.
* Names that break the grammar, or too many names, leave no trustworthy NLRI (§5.3): nothing changes
  and `Received.error` is the NOTIFICATION (UPDATE Message Error / Invalid Network Field, 3/10) that
  resets the session.
* Nothing raises, whatever the UPDATE holds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.errors import ErrorCode, UpdateSubcode
from agentmesh.bgp.messages import AgentAttributes, LargeCommunity, Origin, PathAttributes, Update
from agentmesh.rib import names as namespace
from agentmesh.rib import rib as rib_module
from agentmesh.rib.attributes import (
    MAX_AS_PATH,
    MAX_CAPABILITIES,
    MAX_CLUSTER_LIST,
    MAX_COMMUNITIES,
    MAX_DESCRIPTION,
    MAX_INPUT_SCHEMA,
    MAX_NEXT_HOP,
    MAX_REGION,
    MAX_TAG_LENGTH,
    malformation,
)
from agentmesh.rib.rib import Drop, Rib
from tests.support.routes import (
    E1,
    E1_ASN,
    E2,
    E2_ASN,
    I1,
    announce,
    attrs,
    loc_snapshot,
    make_rib,
    withdrawn,
)

NAMES = ("acme.weather.forecast", "acme.echo")
GOOD = attrs(E1_ASN, next_hop="192.0.2.1:179", capabilities=("weather",))
INVALID_NETWORK_FIELD = (ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_NETWORK_FIELD)


def _agent(**fields: object) -> PathAttributes:
    return replace(GOOD, agent=replace(GOOD.agent, **fields))  # type: ignore[arg-type]


#: Attribute sets `malformation` must refuse (each is treat-as-withdraw).
MALFORMED = [
    pytest.param(replace(GOOD, next_hop=""), id="empty-next-hop"),
    pytest.param(replace(GOOD, next_hop="192.0.2.1"), id="next-hop-without-port"),
    pytest.param(replace(GOOD, next_hop="h" * MAX_NEXT_HOP + ":1"), id="next-hop-too-long"),
    pytest.param(replace(GOOD, as_path=(E1_ASN, 0)), id="as-0-in-as-path"),
    pytest.param(replace(GOOD, as_path=(E1_ASN,) * (MAX_AS_PATH + 1)), id="as-path-too-long"),
    pytest.param(replace(GOOD, communities=tuple(range(1, MAX_COMMUNITIES + 2))), id="too-many-communities"),
    pytest.param(
        replace(
            GOOD, large_communities=tuple(LargeCommunity(E1_ASN, i, 0) for i in range(MAX_COMMUNITIES + 1))
        ),
        id="too-many-large-communities",
    ),
    pytest.param(replace(GOOD, cluster_list=(1,) * (MAX_CLUSTER_LIST + 1)), id="cluster-list-too-long"),
    pytest.param(
        _agent(capabilities=tuple(f"t{i}" for i in range(MAX_CAPABILITIES + 1))), id="too-many-capabilities"
    ),
    pytest.param(_agent(capabilities=("x" * (MAX_TAG_LENGTH + 1),)), id="capability-tag-too-long"),
    pytest.param(_agent(description="d" * (MAX_DESCRIPTION + 1)), id="description-too-long"),
    pytest.param(_agent(region="r" * (MAX_REGION + 1)), id="region-too-long"),
    pytest.param(_agent(input_schema="{not json"), id="input-schema-not-json"),
    pytest.param(_agent(input_schema='{"type": "object"'), id="input-schema-truncated"),
    pytest.param(_agent(input_schema=" " * (MAX_INPUT_SCHEMA + 1)), id="input-schema-too-long"),
]


def _rib_with_routes() -> Rib:
    """E1 announced both names; E2 announced one of them too (a worse path)."""
    rib = make_rib()
    announce(rib, E1, NAMES, GOOD)
    announce(rib, E2, ["acme.echo"], attrs(E2_ASN, 65010, next_hop="192.0.2.2:179"))
    for key in (E1, E2, I1):
        rib.take_updates(key, 0.0)
    return rib


def _assert_treated_as_withdraw(rib: Rib, update: Update, reason_contains: str = "") -> None:
    received = rib.receive(E1, update, 0.0)
    assert received.error is None
    assert received.dropped is not None
    assert received.dropped.reason is Drop.MALFORMED_ATTRIBUTES
    assert received.dropped.names == NAMES
    assert reason_contains in received.dropped.detail
    assert received.announced == 0
    # E1's routes are gone from its Adj-RIB-In and the Loc-RIB; E2's path now serves acme.echo.
    assert dict(rib.adj_rib_in(E1)) == {}
    assert rib.best("acme.weather.forecast") is None
    echo = rib.best("acme.echo")
    assert echo is not None and echo.source.key == E2
    # ... and the rest of the network hears about it.
    assert withdrawn(rib.take_updates(I1, 0.0)) == ["acme.weather.forecast"]


def test_good_attributes_are_not_malformed() -> None:
    assert malformation(GOOD) is None
    assert malformation(_agent(input_schema='{"type": "object"}')) is None
    assert malformation(replace(GOOD, next_hop="[2001:db8::1]:179")) is None
    assert malformation(replace(GOOD, as_path=(E1_ASN,) * MAX_AS_PATH)) is None
    assert malformation(replace(GOOD, communities=tuple(range(MAX_COMMUNITIES)))) is None


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_attributes_are_treat_as_withdraw(bad: PathAttributes) -> None:
    problem = malformation(bad)
    assert problem
    rib = _rib_with_routes()
    _assert_treated_as_withdraw(rib, Update(attributes=bad, announced=NAMES), problem)


def test_decoder_attribute_error_is_treat_as_withdraw() -> None:
    rib = _rib_with_routes()
    update = Update(attributes=GOOD, announced=NAMES, attribute_error="ORIGIN value 7 out of range")
    _assert_treated_as_withdraw(rib, update, "ORIGIN value 7")


def test_announced_names_without_attributes_are_treat_as_withdraw() -> None:
    rib = _rib_with_routes()
    _assert_treated_as_withdraw(rib, Update(announced=NAMES))


def test_treat_as_withdraw_also_applies_the_withdrawn_names() -> None:
    rib = _rib_with_routes()
    announce(rib, E1, ["acme.other"], GOOD)
    received = rib.receive(
        E1, Update(withdrawn=("acme.other",), attributes=replace(GOOD, next_hop=""), announced=NAMES), 0.0
    )
    assert received.dropped is not None and received.error is None
    assert received.withdrawn == 1
    assert dict(rib.adj_rib_in(E1)) == {}


def test_malformed_update_from_a_peer_without_routes_changes_nothing() -> None:
    rib = _rib_with_routes()
    before = loc_snapshot(rib)
    received = rib.receive(I1, Update(attributes=replace(GOOD, as_path=(0,)), announced=("new.name",)), 0.0)
    assert received.dropped is not None and received.dropped.names == ("new.name",)
    assert received.changed == 0
    assert loc_snapshot(rib) == before
    assert rib.loops_dropped == 0


def test_session_keeps_working_after_treat_as_withdraw() -> None:
    rib = _rib_with_routes()
    rib.receive(E1, Update(attributes=replace(GOOD, next_hop=""), announced=NAMES), 0.0)
    announce(rib, E1, NAMES, GOOD)
    best = rib.best("acme.weather.forecast")
    assert best is not None and best.source.key == E1


# -- invalid names: the session is reset ---------------------------------------------------------------

INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("acme..echo", id="empty-label-middle"),
    pytest.param(".acme", id="empty-label-first"),
    pytest.param("acme.", id="empty-label-last"),
    pytest.param("acme. echo", id="label-with-leading-space"),
    pytest.param("acme.we ather", id="label-with-space"),
    pytest.param("acme.echo ", id="trailing-space"),
    pytest.param("acme.*.echo", id="star-in-the-middle"),
    pytest.param("*.acme", id="star-first"),
    pytest.param("*", id="star-alone"),
    pytest.param("acme.**", id="double-star"),
    pytest.param("acme.b*", id="star-inside-a-label"),
    pytest.param("acme.weather.*.*", id="two-aggregate-stars"),
    pytest.param("acme.echo\n", id="trailing-newline"),
    pytest.param("acme/echo", id="slash"),
    pytest.param("caf\u00e9.agent", id="non-ascii-letter"),
    pytest.param("acme.\u0661", id="non-ascii-digit"),
    pytest.param("a" * 256, id="overlong-label"),
    pytest.param(".".join(["abc"] * 64) + ".ab", id="overlong-name-258"),
    pytest.param("a." * 128 + "*", id="overlong-aggregate-257"),
]

#: Names with a newline inside: joined by newlines, the batch check reads them as two valid names.
NEWLINE_NAMES = [
    pytest.param("acme\necho", id="newline-inside"),
    pytest.param("acme.weather.*\necho", id="newline-after-aggregate"),
]


def _assert_reset_and_unchanged(rib: Rib, update: Update) -> None:
    before_loc = loc_snapshot(rib)
    before_in = dict(rib.adj_rib_in(E1))
    received = rib.receive(E1, update, 0.0)
    assert received.error is not None
    assert (received.error.code, received.error.subcode) == INVALID_NETWORK_FIELD
    assert received.dropped is None and received.changed == 0
    assert loc_snapshot(rib) == before_loc
    assert dict(rib.adj_rib_in(E1)) == before_in
    assert rib.take_updates(I1, 0.0) == []


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_is_a_notification_and_nothing_changes(name: str) -> None:
    assert not namespace.is_valid(name)
    assert namespace.invalid_names([name]) == [name]
    rib = _rib_with_routes()
    # Alone, mixed with valid names that would otherwise be installed, or among the withdrawn names
    # (next to a valid withdrawal that would otherwise take effect).
    _assert_reset_and_unchanged(rib, Update(attributes=GOOD, announced=(name,)))
    _assert_reset_and_unchanged(rib, Update(attributes=GOOD, announced=("acme.new", name, "acme.new2")))
    _assert_reset_and_unchanged(rib, Update(withdrawn=("acme.echo", name)))
    # Invalid names win over malformed attributes: the NLRI itself cannot be trusted.
    _assert_reset_and_unchanged(rib, Update(attributes=replace(GOOD, next_hop=""), announced=(name,)))


@pytest.mark.parametrize("name", NEWLINE_NAMES)
def test_name_with_a_newline_is_invalid_in_a_batch(name: str) -> None:
    assert not namespace.is_valid(name)  # holds: the single-name check is right
    assert namespace.invalid_names(["acme.ok", name]) == [name]


@pytest.mark.parametrize("name", NEWLINE_NAMES)
def test_name_with_a_newline_is_a_notification(name: str) -> None:
    rib = _rib_with_routes()
    _assert_reset_and_unchanged(rib, Update(attributes=GOOD, announced=(name,)))


def test_error_notification_names_the_bad_name() -> None:
    rib = make_rib()
    received = rib.receive(E1, Update(attributes=GOOD, announced=("ok", "bad name")), 0.0)
    assert received.error is not None and received.error.data == b"bad name"


def test_longest_valid_name_is_accepted() -> None:
    name = ".".join(["abc"] * 63) + ".abc"
    assert len(name) == namespace.MAX_NAME_LENGTH
    aggregate = "a." * 125 + "abc.*"
    assert len(aggregate) == namespace.MAX_NAME_LENGTH
    rib = make_rib()
    announce(rib, E1, [name, aggregate], GOOD)
    assert rib.best(name) is not None and rib.best(aggregate) is not None


@pytest.mark.parametrize(
    "name",
    ["acme.weather.*", "a.*", "weatherAgent", "my_agent-2.v1", "A-B_c.0.9", "x", "acme.weather.forecast"],
)
def test_valid_names_and_aggregates_are_accepted(name: str) -> None:
    assert namespace.is_valid(name)
    rib = make_rib()
    received = rib.receive(E1, Update(attributes=GOOD, announced=(name,)), 0.0)
    assert received.error is None and received.dropped is None
    best = rib.best(name)
    assert best is not None and best.source.key == E1
    assert namespace.is_aggregate(name) == name.endswith(".*")


def test_too_many_names_is_a_notification() -> None:
    rib = _rib_with_routes()
    limit = rib_module.MAX_NAMES_PER_UPDATE
    _assert_reset_and_unchanged(rib, Update(attributes=GOOD, announced=("acme.n",) * (limit + 1)))
    half = limit // 2 + 1
    _assert_reset_and_unchanged(
        rib, Update(withdrawn=("acme.w",) * half, attributes=GOOD, announced=("acme.n",) * half)
    )


def test_the_maximum_number_of_names_is_accepted() -> None:
    rib = _rib_with_routes()
    received = rib.receive(E1, Update(withdrawn=("acme.unknown",) * rib_module.MAX_NAMES_PER_UPDATE), 0.0)
    assert received.error is None


def test_mismatched_path_ids_are_a_notification() -> None:
    rib = _rib_with_routes()
    before = loc_snapshot(rib)
    received = rib.receive(E1, Update(attributes=GOOD, announced=NAMES, announced_path_ids=(1,)), 0.0)
    assert received.error is not None
    assert (received.error.code, received.error.subcode) == (
        ErrorCode.UPDATE_MESSAGE,
        UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
    )
    assert loc_snapshot(rib) == before


def test_end_of_rib_is_reported_and_changes_nothing() -> None:
    rib = _rib_with_routes()
    before = loc_snapshot(rib)
    assert rib.receive(E1, Update(end_of_rib=True), 0.0).end_of_rib
    assert loc_snapshot(rib) == before


# -- nothing raises ------------------------------------------------------------------------------------

_NAME_CHARS = st.sampled_from(list("aZ9_-.* \n\t/\u00e9[]?"))
_NAMES = st.lists(
    st.text(_NAME_CHARS, max_size=12) | st.sampled_from(["acme.echo", "acme.*", "x"]), max_size=5
)
_AGENTS = st.builds(
    AgentAttributes,
    capabilities=st.lists(st.text(max_size=3), max_size=3).map(tuple),
    input_schema=st.sampled_from(["", "{}", "{", "null", "[1,", '{"a": 1}']),
)
_ATTRS = st.builds(
    PathAttributes,
    origin=st.sampled_from(list(Origin)),
    as_path=st.lists(st.sampled_from([0, E1_ASN, 65000, 4_294_967_295]), max_size=4).map(tuple),
    next_hop=st.sampled_from(["", "x", "192.0.2.1:179", "[::1]:1", ":"]),
    med=st.none() | st.integers(0, 2**32 - 1),
    local_pref=st.none() | st.integers(0, 2**32 - 1),
    communities=st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
    originator_id=st.none() | st.integers(0, 2**32 - 1),
    cluster_list=st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
    agent=_AGENTS,
)
_UPDATES = st.builds(
    Update,
    withdrawn=_NAMES.map(tuple),
    attributes=st.none() | _ATTRS,
    announced=_NAMES.map(tuple),
    end_of_rib=st.booleans(),
    announced_path_ids=st.sampled_from([(), (1,)]),
    attribute_error=st.sampled_from(["", "bad flags"]),
)


@settings(max_examples=200, deadline=None)
@given(updates=st.lists(st.tuples(st.sampled_from([E1, E2, I1]), _UPDATES), max_size=6))
def test_no_update_makes_receive_raise(updates: list[tuple[str, Update]]) -> None:
    rib = make_rib(interval=0.5)
    for now, (key, update) in enumerate(updates):
        received = rib.receive(key, update, float(now))
        if received.error is not None:
            assert received.error.code == ErrorCode.UPDATE_MESSAGE
            assert received.changed == 0
        for peer in (E1, E2, I1):
            rib.take_updates(peer, float(now))
    # Whatever was installed is a valid name with usable attributes.
    for name, path in rib.loc_rib():
        assert namespace.is_valid(name)
        assert malformation(path.attrs) is None
        assert 65000 not in path.attrs.as_path


def test_is_valid_and_invalid_names_agree_on_a_large_mixed_batch() -> None:
    valid = [f"org{i}.team{i % 7}.agent-{i}" for i in range(2000)]
    invalid = ["", "a..b", "a b", "a.*.b", "x" * 300]
    batch = valid[:1000] + invalid + valid[1000:]
    assert namespace.invalid_names(batch) == invalid
    assert [n for n in batch if not namespace.is_valid(n)] == invalid
