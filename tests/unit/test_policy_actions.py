"""Each policy action changes exactly its attribute, clamps where it must, and copies nothing needlessly."""

from __future__ import annotations

import pytest

from agentmesh.bgp.messages import AgentAttributes, Origin, PathAttributes
from agentmesh.rib.attributes import MAX_AS_PATH, NO_ADVERTISE, NO_EXPORT
from agentmesh.rib.policy import (
    UINT32_MAX,
    Action,
    AddCommunities,
    AddLocalPref,
    AddMed,
    Policy,
    PolicyChain,
    PrependAsPath,
    RemoveCommunities,
    ReplaceCommunities,
    RouteContext,
    RouteDisposition,
    SetLocalPref,
    SetMed,
    SetNextHopSelf,
    Statement,
    SubtractMed,
)

LOCAL_ASN = 65001
SELF = "127.0.0.1:50051"
CONTEXT = RouteContext(
    neighbor="127.0.0.1:50052", neighbor_asn=65002, local_asn=LOCAL_ASN, local_next_hop=SELF
)
C100 = 65001 << 16 | 100
C200 = 65001 << 16 | 200


def route(
    *as_path: int, med: int | None = None, local_pref: int | None = None, communities: tuple[int, ...] = ()
) -> PathAttributes:
    return PathAttributes(
        origin=Origin.IGP,
        as_path=as_path,
        next_hop="127.0.0.1:50052",
        med=med,
        local_pref=local_pref,
        communities=communities,
        agent=AgentAttributes(capabilities=("chat",), region="eu-west"),
    )


def applied(attrs: PathAttributes, *actions: Action, context: RouteContext = CONTEXT) -> PathAttributes:
    """The attributes after one statement that matches everything and runs `actions`."""
    chain = PolicyChain([Policy("p", (Statement("s", (), actions, RouteDisposition.ACCEPT),))])
    verdict = chain.evaluate("acme.echo", attrs, context)
    assert verdict.accepted
    [(grouped, _)] = chain.evaluate_many(["acme.echo", "acme.other"], attrs, context)
    assert grouped == verdict
    return verdict.attrs


# --------------------------------------------------------------------------- LOCAL_PREF


def test_set_local_pref() -> None:
    assert applied(route(1), SetLocalPref(200)).local_pref == 200
    assert applied(route(1, local_pref=300), SetLocalPref(0)).local_pref == 0


def test_add_local_pref_counts_an_absent_one_as_100() -> None:
    assert applied(route(1), AddLocalPref(20)).local_pref == 120
    assert applied(route(1, local_pref=150), AddLocalPref(-50)).local_pref == 100


def test_add_local_pref_clamps_to_32_bits() -> None:
    assert applied(route(1, local_pref=10), AddLocalPref(-50)).local_pref == 0
    assert applied(route(1, local_pref=UINT32_MAX - 1), AddLocalPref(5)).local_pref == UINT32_MAX


# --------------------------------------------------------------------------- MED


def test_set_med() -> None:
    assert applied(route(1), SetMed(7)).med == 7
    assert applied(route(1, med=70), SetMed(0)).med == 0


def test_add_med_counts_an_absent_med_as_zero_and_clamps() -> None:
    assert applied(route(1), AddMed(10)).med == 10
    assert applied(route(1, med=5), AddMed(10)).med == 15
    assert applied(route(1, med=UINT32_MAX - 3), AddMed(10)).med == UINT32_MAX


def test_subtract_med_clamps_at_zero() -> None:
    assert applied(route(1, med=50), SubtractMed(10)).med == 40
    assert applied(route(1, med=5), SubtractMed(10)).med == 0
    assert applied(route(1), SubtractMed(10)).med == 0  # absent counts as 0, and 0 is now explicit


# --------------------------------------------------------------------------- communities


def test_add_communities_appends_only_new_ones_in_order() -> None:
    result = applied(route(1, communities=(C100,)), AddCommunities((NO_EXPORT, C100, C200, NO_EXPORT)))
    assert result.communities == (C100, NO_EXPORT, C200)


def test_remove_communities() -> None:
    result = applied(
        route(1, communities=(C100, NO_EXPORT, C200)), RemoveCommunities((NO_EXPORT, NO_ADVERTISE))
    )
    assert result.communities == (C100, C200)


def test_replace_communities_sets_the_whole_list() -> None:
    assert applied(
        route(1, communities=(C100,)), ReplaceCommunities((C200, C200, NO_EXPORT))
    ).communities == (
        C200,
        NO_EXPORT,
    )
    assert applied(route(1, communities=(C100, C200)), ReplaceCommunities(())).communities == ()


def test_remove_then_add_in_one_statement() -> None:
    result = applied(
        route(1, communities=(C100, NO_EXPORT)), RemoveCommunities((NO_EXPORT,)), AddCommunities((C200,))
    )
    assert result.communities == (C100, C200)


# --------------------------------------------------------------------------- AS_PATH and NEXT_HOP


def test_prepend_the_local_as_by_default() -> None:
    assert applied(route(65002, 65010), PrependAsPath(3)).as_path == (LOCAL_ASN,) * 3 + (65002, 65010)


def test_prepend_a_given_as() -> None:
    assert applied(route(65002), PrependAsPath(2, asn=65099)).as_path == (65099, 65099, 65002)


def test_prepend_on_an_empty_path() -> None:
    assert applied(route(), PrependAsPath(1)).as_path == (LOCAL_ASN,)


def test_prepend_never_exceeds_the_as_path_limit() -> None:
    # Peers would treat a longer AS_PATH as malformed (RFC 7606): stop at the limit instead.
    full = route(*range(1, MAX_AS_PATH - 1))
    assert len(applied(full, PrependAsPath(32)).as_path) == MAX_AS_PATH
    at_limit = route(*range(1, MAX_AS_PATH + 1))
    assert applied(at_limit, PrependAsPath(5)) is at_limit


def test_next_hop_self_uses_the_local_next_hop_of_the_context() -> None:
    assert applied(route(1), SetNextHopSelf()).next_hop == SELF


# --------------------------------------------------------------------------- identity and scope


@pytest.mark.parametrize(
    "actions",
    [
        (SetLocalPref(150),),
        (SetMed(20),),
        (AddCommunities((C100,)),),
        (RemoveCommunities((C200,)),),
        (ReplaceCommunities((C100,)),),
        (AddLocalPref(0),),
        (AddMed(0), SubtractMed(0)),
        (SetLocalPref(200), SetLocalPref(150)),  # a change undone within the statement
    ],
)
def test_actions_that_change_nothing_return_the_input_object(actions: tuple[Action, ...]) -> None:
    attrs = route(1, med=20, local_pref=150, communities=(C100,))
    assert applied(attrs, *actions) is attrs


def test_next_hop_self_when_already_self_returns_the_input_object() -> None:
    attrs = PathAttributes(origin=Origin.IGP, as_path=(1,), next_hop=SELF)
    assert applied(attrs, SetNextHopSelf()) is attrs


def test_actions_leave_every_other_attribute_alone() -> None:
    attrs = route(65002, med=5, local_pref=120, communities=(C100,))
    result = applied(
        attrs,
        SetLocalPref(1),
        AddMed(1),
        AddCommunities((C200,)),
        PrependAsPath(1),
        SetNextHopSelf(),
    )
    assert (result.origin, result.agent, result.originator_id, result.cluster_list) == (
        attrs.origin,
        attrs.agent,
        attrs.originator_id,
        attrs.cluster_list,
    )
    assert (result.local_pref, result.med, result.communities) == (1, 6, (C100, C200))
    assert (result.as_path, result.next_hop) == ((LOCAL_ASN, 65002), SELF)


def test_actions_apply_in_order_within_a_statement() -> None:
    assert applied(route(1), SetMed(10), AddMed(5), SubtractMed(3)).med == 12
    assert applied(route(1), AddMed(5), SetMed(10)).med == 10


def test_action_renderings_name_what_they_do() -> None:
    assert [
        str(action)
        for action in (
            SetLocalPref(200),
            AddLocalPref(-10),
            AddLocalPref(10),
            SetMed(5),
            AddMed(10),
            SubtractMed(10),
            AddCommunities((C100, NO_EXPORT)),
            RemoveCommunities((NO_ADVERTISE,)),
            ReplaceCommunities(()),
            PrependAsPath(3),
            PrependAsPath(2, 65099),
            SetNextHopSelf(),
        )
    ] == [
        "local_pref=200",
        "local_pref-10",
        "local_pref+10",
        "med=5",
        "med+10",
        "med-10",
        "communities+[65001:100 no-export]",
        "communities-[no-advertise]",
        "communities=[]",
        "as_path_prepend local AS x3",
        "as_path_prepend AS65099 x2",
        "next_hop=self",
    ]
