"""RFC 4271 §4.2, §4.4, §8, §10 timers on a fake clock: hold, keepalive and connect-retry.

The FSM never reads a clock: these tests move time by hand with `poll(now)` and read the timers
as absolute deadlines with `next_deadline()` and `timer_deadline()`.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from agentmesh.bgp.errors import ErrorCode
from agentmesh.bgp.fsm import (
    OPEN_SENT_HOLD_TIME,
    Close,
    Dial,
    Effect,
    Event,
    EventKind,
    Fsm,
    Reason,
    Send,
    Settings,
    State,
    StateChanged,
    Timer,
)
from agentmesh.bgp.messages import KEEPALIVE, Keepalive, Notification, Open, RouteRefresh, Update
from agentmesh.bgp.open import negotiate

LOCAL_ASN, PEER_ASN = 65001, 65002
LOCAL_ID, PEER_ID = 0x0A000001, 0x0A000002
JITTER_LOW, JITTER_HIGH = 0.75, 1.0  # RFC 4271 §10
EPS = 1e-9


def make_fsm(seed: int = 0, **overrides: Any) -> Fsm:
    settings = Settings(local_asn=LOCAL_ASN, local_id=LOCAL_ID, peer_asn=PEER_ASN, **overrides)
    return Fsm(settings, random.Random(seed), itertools.count(1))


def stream(fsm: Fsm) -> int:
    """The FSM's connection id, which must exist."""
    assert fsm.conn is not None
    return fsm.conn


def state_of(fsm: Fsm) -> State:
    """The state read afresh: mypy would keep an earlier `assert fsm.state is ...` narrowing."""
    return fsm.state


def open_sent(fsm: Fsm, now: float = 0.0) -> None:
    fsm.handle(Event(EventKind.MANUAL_START), now)
    fsm.handle(Event(EventKind.STREAM_REQUEST_ACKED, fsm.conn), now)
    assert fsm.state is State.OPEN_SENT


def open_confirm(fsm: Fsm, peer_hold: int, now: float = 0.0) -> None:
    open_sent(fsm, now)
    fsm.handle(Event(EventKind.BGP_OPEN, fsm.conn, Open(PEER_ASN, peer_hold, PEER_ID)), now)
    assert fsm.state is State.OPEN_CONFIRM


def established(fsm: Fsm, peer_hold: int, now: float = 0.0) -> None:
    open_confirm(fsm, peer_hold, now)
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), now)
    assert fsm.state is State.ESTABLISHED


def keepalives(effects: list[Effect]) -> int:
    return sum(isinstance(e, Send) and isinstance(e.message, Keepalive) for e in effects)


def within_jitter(delay: float, nominal: float) -> bool:
    return JITTER_LOW * nominal - EPS <= delay <= JITTER_HIGH * nominal + EPS


# -- hold time negotiation (RFC 4271 §4.2) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("local_hold", "peer_hold", "keepalive_time", "hold", "keepalive"),
    [
        (90, 30, None, 30, 10.0),  # the smaller proposal wins, whichever side made it
        (30, 90, None, 30, 10.0),
        (90, 90, None, 90, 30.0),  # keepalive at a third of the hold time
        (90, 90, 5.0, 90, 5.0),  # ... or the configured keepalive if smaller
        (90, 90, 60.0, 90, 30.0),  # ... but never more than a third
        (9, 240, None, 9, 3.0),
        (90, 3, None, 3, 1.0),  # 3 s is the smallest non-zero hold time
    ],
)
def test_hold_time_is_the_smaller_proposal(
    local_hold: int, peer_hold: int, keepalive_time: float | None, hold: int, keepalive: float
) -> None:
    fsm = make_fsm(hold_time=local_hold, keepalive_time=keepalive_time)
    open_confirm(fsm, peer_hold, now=100.0)
    assert fsm.negotiated is not None
    assert fsm.negotiated.hold_time == hold
    assert fsm.negotiated.keepalive_time == pytest.approx(keepalive)
    assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(100.0 + hold)
    keepalive_deadline = fsm.timer_deadline(Timer.KEEPALIVE)
    assert keepalive_deadline is not None
    assert within_jitter(keepalive_deadline - 100.0, keepalive)
    assert fsm.timer_deadline(Timer.CONNECT_RETRY) is None
    # Established restarts the hold timer with the negotiated value.
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), 101.0)
    assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(101.0 + hold)


@pytest.mark.parametrize(("local_hold", "peer_hold"), [(90, 0), (0, 90), (0, 0)])
def test_zero_hold_time_disables_hold_and_keepalive_timers(local_hold: int, peer_hold: int) -> None:
    fsm = make_fsm(hold_time=local_hold)
    open_confirm(fsm, peer_hold)
    assert fsm.negotiated is not None and fsm.negotiated.hold_time == 0
    assert fsm.next_deadline() is None
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), 1.0)
    assert fsm.state is State.ESTABLISHED
    assert fsm.next_deadline() is None
    # Nothing is ever sent on its own and the session never times out.
    assert fsm.poll(1_000_000.0) == []
    fsm.send(Update(withdrawn=("x",)), 1_000_001.0)
    fsm.handle(Event(EventKind.UPDATE, fsm.conn, Update()), 1_000_002.0)
    assert fsm.next_deadline() is None
    assert fsm.state is State.ESTABLISHED


def test_negotiate_directly() -> None:
    local = Open(LOCAL_ASN, 90, LOCAL_ID)
    assert negotiate(local, None, Open(PEER_ASN, 45, PEER_ID)).hold_time == 45
    assert negotiate(local, None, Open(PEER_ASN, 45, PEER_ID)).keepalive_time == pytest.approx(15.0)
    assert negotiate(local, 7.0, Open(PEER_ASN, 180, PEER_ID)).keepalive_time == pytest.approx(7.0)
    assert negotiate(local, None, Open(PEER_ASN, 0, PEER_ID)).hold_time == 0


# -- keepalive pacing (RFC 4271 §4.4, §10) ---------------------------------------------------------


def run_established(fsm: Fsm, start: float, duration: float) -> list[float]:
    """Poll at every deadline for `duration` seconds, the peer answering each KEEPALIVE; send times."""
    times: list[float] = []
    while (deadline := fsm.next_deadline()) is not None and deadline <= start + duration:
        effects = fsm.poll(deadline)
        assert fsm.state is State.ESTABLISHED, effects
        if keepalives(effects):
            times.append(deadline)
            fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), deadline)
    return times


def test_keepalives_are_paced_at_a_jittered_third_of_the_hold_time() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    times = run_established(fsm, 0.0, 90.0)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps, "no KEEPALIVE sent"
    assert all(2.25 - EPS <= gap <= 3.0 + EPS for gap in gaps), gaps
    assert 90 // 3 <= len(times) <= 90 / 2.25
    # Jittered, not a fixed period.
    assert len({round(gap, 6) for gap in gaps}) > 1


def test_sending_an_update_restarts_the_keepalive_timer() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    before = fsm.timer_deadline(Timer.KEEPALIVE)
    assert before is not None and before <= 3.0 + EPS
    update = Update(withdrawn=("summarizer",))
    effects = fsm.send(update, 2.0)
    assert effects == [Send(stream(fsm), update)]
    after = fsm.timer_deadline(Timer.KEEPALIVE)
    assert after is not None
    assert within_jitter(after - 2.0, 3.0)
    assert after > before
    # Nothing is due at the old deadline any more.
    assert keepalives(fsm.poll(before)) == 0


def test_sending_route_refresh_leaves_the_keepalive_timer_alone() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    before = fsm.timer_deadline(Timer.KEEPALIVE)
    fsm.send(RouteRefresh(), 1.0)
    assert fsm.timer_deadline(Timer.KEEPALIVE) == before


def test_updates_sent_often_enough_replace_keepalives() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    sent_keepalives = 0
    for second in range(1, 60):
        sent_keepalives += keepalives(fsm.poll(float(second)))
        fsm.send(Update(withdrawn=(f"n{second}",)), float(second))
        fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), float(second))
    assert sent_keepalives == 0


# -- hold timer (RFC 4271 §4.4, §6.5) --------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [KEEPALIVE, Update(withdrawn=("agent",)), RouteRefresh()],
    ids=["keepalive", "update", "route-refresh"],
)
def test_hold_timer_restarts_on_every_message_received(message: Any) -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(9.0)
    kind = {Keepalive: EventKind.KEEPALIVE, Update: EventKind.UPDATE, RouteRefresh: EventKind.ROUTE_REFRESH}
    for now in (5.0, 12.0, 20.5):
        fsm.poll(now)
        fsm.handle(Event(kind[type(message)], fsm.conn, message), now)
        assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(now + 9.0)
    assert fsm.state is State.ESTABLISHED


def test_hold_timer_expiry_sends_4_0_and_goes_idle() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9, now=0.0)
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), 4.0)
    conn = stream(fsm)
    # Only our own KEEPALIVEs go out until the peer has been silent for the whole hold time.
    effects = fsm.poll(13.0 - 1e-6)
    assert fsm.state is State.ESTABLISHED
    assert all(isinstance(e, Send) and isinstance(e.message, Keepalive) for e in effects)
    effects = fsm.poll(13.0)
    assert effects[0] == StateChanged(
        State.ESTABLISHED,
        State.IDLE,
        Reason.HOLD_TIMER_EXPIRED,
        Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0),
    )
    assert effects[1:] == [Send(conn, Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)), Close(conn)]
    assert fsm.next_deadline() is None


def test_hold_timer_expires_in_open_confirm_too() -> None:
    fsm = make_fsm(hold_time=30)
    open_confirm(fsm, peer_hold=30, now=0.0)
    effects: list[Effect] = []
    while (deadline := fsm.next_deadline()) is not None:
        effects += fsm.poll(deadline)
    assert keepalives(effects) >= 3  # keepalives went out while waiting (§8.2.2 OpenConfirm)
    assert effects[-3:] == [
        StateChanged(
            State.OPEN_CONFIRM,
            State.IDLE,
            Reason.HOLD_TIMER_EXPIRED,
            Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0),
        ),
        Send(1, Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)),
        Close(1),
    ]
    assert fsm.state is State.IDLE


def test_open_sent_uses_the_large_hold_value() -> None:
    assert OPEN_SENT_HOLD_TIME == 240.0  # §8.2.2 suggests four minutes
    fsm = make_fsm(hold_time=9)
    open_sent(fsm, now=5.0)
    assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(245.0)
    assert fsm.next_deadline() == pytest.approx(245.0)
    assert fsm.poll(244.999) == []
    conn = stream(fsm)
    effects = fsm.poll(245.0)
    assert Send(conn, Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)) in effects
    assert fsm.state is State.IDLE


def test_open_received_replaces_the_large_hold_value() -> None:
    fsm = make_fsm(hold_time=9)
    open_confirm(fsm, peer_hold=9, now=5.0)
    assert fsm.timer_deadline(Timer.HOLD) == pytest.approx(14.0)


# -- connect retry and backoff (RFC 4271 §8.1.1 damping, §10 jitter) -------------------------------


def test_connect_retry_backs_off_exponentially_up_to_the_cap() -> None:
    fsm = make_fsm(connect_retry_initial=1.0, connect_retry_time=30.0)
    now = 0.0
    fsm.handle(Event(EventKind.MANUAL_START), now)
    delays: list[float] = []
    for _ in range(8):
        assert fsm.state is State.CONNECT
        fsm.handle(Event(EventKind.STREAM_FAILED, fsm.conn), now)
        assert state_of(fsm) is State.ACTIVE
        deadline = fsm.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        now = deadline
        assert any(isinstance(e, Dial) for e in fsm.poll(now))
    nominal = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert all(within_jitter(d, n) for d, n in zip(delays, nominal, strict=True)), delays


def test_backoff_resets_after_established() -> None:
    fsm = make_fsm(connect_retry_initial=1.0, connect_retry_time=30.0)
    fsm.handle(Event(EventKind.MANUAL_START), 0.0)
    now = 0.0
    for _ in range(5):
        fsm.handle(Event(EventKind.STREAM_FAILED, fsm.conn), now)
        deadline = fsm.next_deadline()
        assert deadline is not None
        now = deadline
        fsm.poll(now)
    assert fsm.failures == 5 and fsm.backoff() == 16.0
    fsm.handle(Event(EventKind.STREAM_REQUEST_ACKED, fsm.conn), now)
    fsm.handle(Event(EventKind.BGP_OPEN, fsm.conn, Open(PEER_ASN, 90, PEER_ID)), now)
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), now)
    assert fsm.state is State.ESTABLISHED and fsm.failures == 0
    # The session drops: the next attempt waits the initial delay again, not the capped one.
    fsm.handle(Event(EventKind.STREAM_FAILED, fsm.conn), now + 50)
    assert state_of(fsm) is State.IDLE and fsm.failures == 1
    fsm.handle(Event(EventKind.AUTOMATIC_START_PASSIVE), now + 50)
    deadline = fsm.next_deadline()
    assert deadline is not None
    assert within_jitter(deadline - (now + 50), 1.0)


def test_a_hanging_dial_is_retried_after_connect_retry_time() -> None:
    fsm = make_fsm(connect_retry_time=120.0)
    fsm.handle(Event(EventKind.MANUAL_START), 0.0)
    deadline = fsm.timer_deadline(Timer.CONNECT_RETRY)
    assert deadline is not None and within_jitter(deadline, 120.0)


# -- jitter is reproducible ------------------------------------------------------------------------


def deadlines_of_a_scripted_session(seed: int) -> list[float]:
    fsm = make_fsm(seed=seed, hold_time=9)
    fsm.handle(Event(EventKind.MANUAL_START), 0.0)
    seen: list[float] = []
    now = 0.0
    for _ in range(3):
        fsm.handle(Event(EventKind.STREAM_FAILED, fsm.conn), now)
        now = fsm.next_deadline() or now
        seen.append(now)
        fsm.poll(now)
    fsm.handle(Event(EventKind.STREAM_REQUEST_ACKED, fsm.conn), now)
    fsm.handle(Event(EventKind.BGP_OPEN, fsm.conn, Open(PEER_ASN, 9, PEER_ID)), now)
    fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), now)
    return seen + run_established(fsm, now, 30.0)


def test_jitter_is_deterministic_with_a_seeded_rng() -> None:
    assert deadlines_of_a_scripted_session(7) == deadlines_of_a_scripted_session(7)
    assert deadlines_of_a_scripted_session(7) != deadlines_of_a_scripted_session(8)


def test_effects_never_include_a_dial_while_established() -> None:
    fsm = make_fsm(hold_time=9)
    established(fsm, peer_hold=9)
    effects: list[Effect] = []
    now = 0.0
    while now < 60.0:
        now += 1.0
        effects += fsm.poll(now)
        fsm.handle(Event(EventKind.KEEPALIVE, fsm.conn, KEEPALIVE), now)
    assert not any(isinstance(e, Dial) for e in effects)
