"""A session's life with `Pair`: establish, administrative stop and restart (RFC 4486, RFC 9003),
automatic restart with backoff when the peer is unreachable, and hold timer expiry (RFC 4271 §6.5).
"""

from __future__ import annotations

import itertools
from typing import Any

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import Dial, Reason, SessionUp, Settings, State, StateChanged, UpdateReceived
from agentmesh.bgp.messages import Keepalive, Notification, Update, cease
from agentmesh.bgp.peer import ConnectionRefused
from tests.support.inmemory import Pair

ASN_A, ASN_B = 65001, 65002
HOLD = 9
INITIAL, CAP = 1.0, 8.0


def make_pair(**overrides: Any) -> Pair:
    common: dict[str, Any] = {
        "hold_time": HOLD,
        "connect_retry_initial": INITIAL,
        "connect_retry_time": CAP,
    }
    a = Settings(local_asn=ASN_A, local_id=0x0A000001, peer_asn=ASN_B, **common)
    b = Settings(local_asn=ASN_B, local_id=0x0A000002, peer_asn=ASN_A, **common)
    return Pair(a, b, **overrides)


def established(pair: Pair) -> bool:
    return pair.a.state is State.ESTABLISHED and pair.b.state is State.ESTABLISHED


def start_and_establish(pair: Pair) -> None:
    pair.start()
    pair.run(until=pair.now + 5.0)
    assert established(pair)


def step_until(pair: Pair, until: float) -> list[tuple[float, str, Any]]:
    """Run to `until` one deadline at a time; return (time, name, effect) for every effect."""
    timeline: list[tuple[float, str, Any]] = []
    while True:
        seen = len(pair.log)
        deadlines = [d for p in pair.peers.values() if (d := p.next_deadline()) is not None]
        target = min([until, *deadlines])
        pair.run(until=max(target, pair.now))
        timeline += [(pair.now, name, effect) for name, effect in pair.log[seen:]]
        if pair.now >= until:
            return timeline


# -- establishing ----------------------------------------------------------------------------------


def test_pair_establishes_and_reports_session_up_once_each() -> None:
    pair = make_pair()
    start_and_establish(pair)
    for name in "ab":
        ups = [e for n, e in pair.log if n == name and isinstance(e, SessionUp)]
        assert len(ups) == 1
        assert ups[0].negotiated.hold_time == HOLD
        assert pair.transitions(name)[-1].new is State.ESTABLISHED
    assert len(pair.live_links()) == 1


def test_established_session_stays_up_on_keepalives_alone() -> None:
    pair = make_pair()
    start_and_establish(pair)
    pair.run(until=pair.now + 600.0)
    assert established(pair)
    keepalives = [n for n, m in pair.sent if isinstance(m, Keepalive)]
    # 600 s at one KEEPALIVE every 2.25-3 s each way.
    assert 2 * 200 <= len(keepalives) <= 2 * 267 + 4


def test_updates_flow_both_ways() -> None:
    pair = make_pair()
    start_and_establish(pair)
    update = Update(withdrawn=("summarizer",))
    pair.apply("a", pair.a.send(update, pair.now))
    pair.run()
    received = [e for n, e in pair.log if n == "b" and isinstance(e, UpdateReceived)]
    assert [e.update for e in received] == [update]


# -- administrative stop and restart ---------------------------------------------------------------


def test_stop_sends_cease_2_with_the_shutdown_communication_and_the_peer_restarts() -> None:
    pair = make_pair()
    start_and_establish(pair)
    farewell = cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "upgrading to agentmesh 0.2, back in 5 minutes")
    mark = len(pair.log)
    pair.apply("a", pair.a.stop(pair.now, farewell))
    pair.run()

    assert pair.a.state is State.IDLE
    b_changes = [e for n, e in pair.log[mark:] if n == "b" and isinstance(e, StateChanged)]
    assert b_changes[0] == StateChanged(State.ESTABLISHED, State.IDLE, Reason.NOTIFICATION_RECEIVED, farewell)
    assert b_changes[0].notification is not None
    assert b_changes[0].notification.shutdown_communication == "upgrading to agentmesh 0.2, back in 5 minutes"
    # Automatic restart: b waits in Active for a to come back, and does not answer the NOTIFICATION.
    assert b_changes[1] == StateChanged(State.IDLE, State.ACTIVE, Reason.AUTOMATIC_START)
    assert not [m for n, m in pair.sent[-3:] if n == "b" and isinstance(m, Notification)]

    # While a is down b keeps retrying and a refuses each dial with Cease/5.
    pair.run(until=pair.now + 30.0)
    assert pair.a.state is State.IDLE and pair.b.state is not State.ESTABLISHED
    assert any(isinstance(e, ConnectionRefused) for n, e in pair.log[mark:] if n == "a")

    pair.start("a")
    pair.run(until=pair.now + CAP + 1.0)
    assert established(pair)
    assert len(pair.live_links()) == 1


def test_stop_without_text_sends_plain_cease_2() -> None:
    pair = make_pair()
    start_and_establish(pair)
    pair.apply("b", pair.b.stop(pair.now))
    pair.run()
    assert ("b", cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN)) in pair.sent
    assert pair.a.state is State.ACTIVE
    assert pair.transitions("a")[-2].reason is Reason.NOTIFICATION_RECEIVED


def test_stopped_side_stays_down() -> None:
    pair = make_pair()
    start_and_establish(pair)
    mark = len(pair.log)
    pair.apply("a", pair.a.stop(pair.now))
    pair.run(until=pair.now + 120.0)
    assert pair.a.state is State.IDLE
    assert not any(isinstance(e, Dial) for n, e in pair.log[mark:] if n == "a")
    assert pair.a.next_deadline() is None


# -- unreachable peer ------------------------------------------------------------------------------


def test_unreachable_peer_is_retried_with_backoff_until_it_answers() -> None:
    pair = make_pair(reachable=False)
    pair.start()
    timeline = step_until(pair, 60.0)
    assert not established(pair)

    for name in "ab":
        dials = [t for t, n, e in timeline if n == name and isinstance(e, Dial)]
        dials = [0.0, *dials]  # the first dial happened at start
        gaps = [later - earlier for earlier, later in itertools.pairwise(dials)]
        nominal = [min(CAP, INITIAL * 2**k) for k in range(len(gaps))]
        assert len(gaps) >= 8
        for gap, expected in zip(gaps, nominal, strict=True):
            assert 0.75 * expected - 1e-9 <= gap <= expected + 1e-9, (name, gaps)
        assert pair.peers[name].state is State.ACTIVE

    pair.reachable["a"] = pair.reachable["b"] = True
    back = pair.now
    pair.run(until=back + CAP)
    assert established(pair)
    assert len(pair.live_links()) == 1


def test_one_way_unreachable_peer_is_reached_by_its_own_dial() -> None:
    pair = make_pair()
    pair.reachable["b"] = False  # a cannot reach b, but b can reach a
    pair.start()
    pair.run(until=CAP)
    assert established(pair)
    assert pair.b.primary.outbound and not pair.a.primary.outbound


# -- hold timer ------------------------------------------------------------------------------------


def test_silent_peer_is_dropped_within_the_hold_time() -> None:
    pair = make_pair()
    start_and_establish(pair)
    pair.run(until=pair.now + 20.0)
    silence = pair.now
    pair.drop_to.add("a")  # from now on nothing reaches a: b has gone silent for a
    for link in pair.links:
        link.inflight["a"].clear()

    # The last KEEPALIVE from b arrived less than 3 s ago, so a holds on for at least 6 s more.
    pair.run(until=silence + HOLD - 3.0 - 1e-6)
    assert pair.a.state is State.ESTABLISHED
    pair.run(until=silence + HOLD)
    a_down = [t for t in pair.transitions("a") if t.old is State.ESTABLISHED]
    assert a_down == [
        StateChanged(
            State.ESTABLISHED,
            State.IDLE,
            Reason.HOLD_TIMER_EXPIRED,
            a_down[0].notification if a_down else None,
        )
    ]
    assert ("a", Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)) in pair.sent
    # b is told why: it goes down on a's NOTIFICATION 4/0 rather than waiting for its own timer.
    b_down = [t for t in pair.transitions("b") if t.old is State.ESTABLISHED]
    assert len(b_down) == 1 and b_down[0].reason is Reason.NOTIFICATION_RECEIVED
    assert b_down[0].notification == Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)

    # Once b is heard again the session comes back.
    pair.drop_to.clear()
    pair.run(until=pair.now + 300.0)
    assert established(pair)


def test_both_sides_time_out_when_the_link_goes_dead() -> None:
    pair = make_pair()
    start_and_establish(pair)
    dead = pair.now
    pair.drop_to.update({"a", "b"})
    pair.run(until=dead + HOLD)
    for name in "ab":
        [down] = [t for t in pair.transitions(name) if t.old is State.ESTABLISHED]
        assert down.reason is Reason.HOLD_TIMER_EXPIRED
