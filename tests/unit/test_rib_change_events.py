"""What the RIB tells the management plane: best-path changes with their reasons, and resending a table.

Sans-IO: time is only the `now` argument. The node is AS 65000 with eBGP neighbours E1 and E2 (see
`tests.support.routes`).
"""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.rib.decision import DecisionReason
from agentmesh.rib.resolve import glob_matches
from agentmesh.rib.rib import BestPathChange, ChangeKind
from agentmesh.speaker.events import PeerStateEvent, Subscription, WatcherOverflow
from tests.support.routes import E1, E2, announce, announced, attrs, make_rib, withdraw, withdrawn

NAME = "acme.weather"


def test_every_kind_of_change_is_counted_and_recorded_with_its_reason() -> None:
    rib = make_rib(peers=(E1, E2))
    rib.record_changes = True
    announce(rib, E1, [NAME], attrs(65001, 65100))
    announce(rib, E2, [NAME], attrs(65002))  # shorter AS_PATH: beats E1's path, which stays a candidate
    withdraw(rib, E2, [NAME])  # E1's path is what is left
    withdraw(rib, E1, [NAME])
    changes = rib.take_changes()
    assert [(c.name, c.reason) for c in changes] == [
        (NAME, ChangeKind.NEW_ROUTE),
        (NAME, DecisionReason.AS_PATH_LENGTH),
        (NAME, ChangeKind.PREVIOUS_BEST_LOST),
        (NAME, ChangeKind.WITHDRAWN),
    ]
    assert changes[1].best is not None and changes[1].best.source.key == E2
    assert changes[3] == BestPathChange(NAME, None, ChangeKind.WITHDRAWN)
    assert rib.take_changes() == []  # taken once
    assert sum(rib.best_path_changes.values()) == 4


def test_changes_are_counted_but_not_kept_while_nobody_watches() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["a.x", "a.y"], attrs(65001, med=10))
    announce(rib, E2, ["a.x"], attrs(65002, med=0))
    announce(rib, E2, ["a.y"], attrs(65002, 65200))  # longer: no change of best, nothing counted
    assert rib.take_changes() == []
    assert rib.best_path_changes == {ChangeKind.NEW_ROUTE: 2, DecisionReason.MED: 1}


def test_a_best_path_replaced_by_its_own_source_is_previous_best_lost() -> None:
    rib = make_rib(peers=(E1,))
    rib.record_changes = True
    announce(rib, E1, [NAME], attrs(65001))
    announce(rib, E1, [NAME], attrs(65001, 65300))  # an implicit withdrawal of the first path
    assert [c.reason for c in rib.take_changes()] == [ChangeKind.NEW_ROUTE, ChangeKind.PREVIOUS_BEST_LOST]


def test_resend_announces_the_whole_table_again_without_repeating_withdrawals() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["a.x", "a.y"], attrs(65001))
    assert set(announced(rib.take_updates(E2, 0.0))) == {"a.x", "a.y"}
    assert rib.take_updates(E2, 1.0) == []  # nothing changed: nothing to send
    rib.resend(E2)
    again = rib.take_updates(E2, 1.0)
    assert set(announced(again)) == {"a.x", "a.y"} and withdrawn(again) == []
    # A withdrawal queued when the resend comes is still sent.
    withdraw(rib, E1, ["a.y"])
    rib.resend(E2)
    updates = rib.take_updates(E2, 2.0)
    assert withdrawn(updates) == ["a.y"] and set(announced(updates)) == {"a.x"}


def test_resend_to_a_peer_that_is_down_does_nothing() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["a.x"], attrs(65001))
    rib.peer_down(E2)
    rib.resend(E2)
    assert rib.take_updates(E2, 0.0) == [] and not rib.has_pending(E2, 0.0)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("acme.weather", "acme.weather", True),
        ("acme.*", "acme.weather", True),
        ("acme.*", "acme.weather.eu", False),
        ("acme.**", "acme.weather.eu", True),
        ("**.eu", "acme.weather.eu", True),
        ("**", "x", True),
        ("acme.w?ather", "acme.weather", True),
        ("acme.[vw]*", "acme.weather", True),
        ("acme.[xy]*", "acme.weather", False),
        ("acme.weather", "acme.weather.eu", False),
    ],
)
def test_glob_matching_of_single_names_follows_the_index(pattern: str, name: str, matches: bool) -> None:
    assert glob_matches(pattern, name) is matches
    rib = make_rib(peers=(E1,))
    announce(rib, E1, [name], attrs(65001, agent=AgentAttributes()))
    assert [found for found, _ in rib.matching(pattern)] == ([name] if matches else [])


async def test_a_watcher_that_falls_behind_is_told_instead_of_missing_events() -> None:
    subscription = Subscription(peers=True, routes=False, limit=3)
    event = PeerStateEvent("127.0.0.1:1", State.IDLE, State.CONNECT, None, None)
    for _ in range(3):
        subscription.publish(event)
    assert [await subscription.next() for _ in range(2)] == [event, event]
    for _ in range(3):
        subscription.publish(event)  # four unread now: one too many
    with pytest.raises(WatcherOverflow):
        await subscription.next()
    with pytest.raises(WatcherOverflow):
        subscription.drain()


async def test_a_watcher_waits_for_the_next_event() -> None:
    subscription = Subscription(peers=True, routes=True)
    event = PeerStateEvent("127.0.0.1:1", State.IDLE, State.CONNECT, None, None)
    waiting = asyncio.ensure_future(subscription.next())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    subscription.publish(event)
    assert await asyncio.wait_for(waiting, 1) == event
