"""RFC 4271 §6.8 connection collisions (RFC 6286 §2.3 for equal identifiers), through `Peer`.

`Pair(shuffle=True)` makes both ends of each dial learn of it separately and in a seeded order, so
two neighbours that start together really have two streams up at once. Whatever the order, both
must end Established on the same single stream, the other one closed with Cease/7 or refused.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import (
    Close,
    Dial,
    Event,
    EventKind,
    Reason,
    Send,
    SessionUp,
    Settings,
    State,
    StateChanged,
    UpdateReceived,
    message_event,
)
from agentmesh.bgp.messages import KEEPALIVE, Notification, Open, Update, cease
from agentmesh.bgp.peer import ConnectionRefused, Peer, PeerEffect
from tests.support.inmemory import Pair

ASN_A, ASN_B = 65001, 65002
COLLISION = (ErrorCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)
REJECTED = (ErrorCode.CEASE, CeaseSubcode.CONNECTION_REJECTED)

#: (id of a, id of b): a higher, b higher, and equal identifiers across ASes (the higher ASN, b, wins).
ID_ORDERINGS = [
    pytest.param((0x0A000002, 0x0A000001), id="a-higher"),
    pytest.param((0x0A000001, 0x0A000002), id="b-higher"),
    pytest.param((0x0A000005, 0x0A000005), id="equal-ids-asn-decides"),
]


def pair_settings(ids: tuple[int, int], **overrides: Any) -> tuple[Settings, Settings]:
    common: dict[str, Any] = {"hold_time": 9, "connect_retry_initial": 1.0, "connect_retry_time": 8.0}
    common |= overrides
    a = Settings(local_asn=ASN_A, local_id=ids[0], peer_asn=ASN_B, **common)
    b = Settings(local_asn=ASN_B, local_id=ids[1], peer_asn=ASN_A, **common)
    return a, b


def state_of(peer: Peer) -> State:
    """The state read afresh: mypy would keep an earlier `assert peer.state is ...` narrowing."""
    return peer.state


def higher(ids: tuple[int, int]) -> str:
    return "a" if (ids[0], ASN_A) > (ids[1], ASN_B) else "b"


def sent_notifications(pair: Pair, name: str) -> list[tuple[int, int]]:
    return [(m.code, m.subcode) for n, m in pair.sent if n == name and isinstance(m, Notification)]


def assert_one_established_stream(pair: Pair) -> None:
    assert pair.a.state is State.ESTABLISHED
    assert pair.b.state is State.ESTABLISHED
    [live] = pair.live_links()
    assert live.ends == {"a": pair.a.primary.conn, "b": pair.b.primary.conn}
    # Both agree on who dialled the surviving stream.
    assert pair.a.primary.outbound != pair.b.primary.outbound
    assert pair.a.contender is None and pair.b.contender is None
    assert all(not link.ends for link in pair.links if link is not live), "a losing stream is still open"
    for name in "ab":
        assert sum(isinstance(e, SessionUp) for n, e in pair.log if n == name) == 1


# -- simultaneous dials ----------------------------------------------------------------------------


@pytest.mark.parametrize("ids", ID_ORDERINGS)
@pytest.mark.parametrize("seed", range(1, 21))
def test_simultaneous_dials_settle_on_one_stream(ids: tuple[int, int], seed: int) -> None:
    a, b = pair_settings(ids)
    pair = Pair(a, b, seed=seed, shuffle=True)
    pair.start()  # both non-passive: both dial before either dial is answered
    assert [type(e) for _, e in pair.log].count(Dial) == 2
    pair.run(until=30.0)

    assert_one_established_stream(pair)
    losers = len(pair.links) - 1
    if losers:
        # The other stream was closed by collision resolution (or refused once a session was up).
        cleanup = [n for name in "ab" for n in sent_notifications(pair, name)]
        refused = any(isinstance(e, ConnectionRefused) for _, e in pair.log)
        assert COLLISION in cleanup or refused
        assert set(cleanup) <= {COLLISION, REJECTED}
    # No session was ever torn down on the way: Established is reached once and kept.
    for name in "ab":
        downs = [t for t in pair.transitions(name) if t.old is State.ESTABLISHED]
        assert downs == []


@pytest.mark.parametrize("ids", ID_ORDERINGS)
def test_collision_keeps_the_stream_dialled_by_the_higher_identifier(ids: tuple[int, int]) -> None:
    """The textbook race: both dials answered, then both OPENs on both streams (RFC 4271 §6.8)."""
    a, b = pair_settings(ids)
    pair = Pair(a, b, shuffle=True)
    pair.start()
    # Both dialler acknowledgements first, then both acceptances, then messages in FIFO order.
    pair.pending.sort(key=lambda item: item[2].kind is not EventKind.STREAM_REQUEST_ACKED)
    pair.shuffle = False
    pair.run(until=30.0)

    assert_one_established_stream(pair)
    winner = higher(ids)
    loser = "b" if winner == "a" else "a"
    assert pair.peers[winner].primary.outbound, "the survivor is the higher speaker's dial"
    assert not pair.peers[loser].primary.outbound
    assert len(pair.links) == 2
    # Each side resolved the collision itself and closed the same losing stream with Cease/7.
    assert COLLISION in sent_notifications(pair, "a") + sent_notifications(pair, "b")


def test_collision_resolution_is_silent_about_the_dumped_stream() -> None:
    """The loser's FSM is a contender or is swapped out: no Established -> Idle is reported."""
    a, b = pair_settings((0x0A000002, 0x0A000001))
    pair = Pair(a, b, shuffle=True)
    pair.start()
    pair.pending.sort(key=lambda item: item[2].kind is not EventKind.STREAM_REQUEST_ACKED)
    pair.shuffle = False
    pair.run(until=30.0)
    for name in "ab":
        assert all(t.new is not State.IDLE for t in pair.transitions(name))


# -- streams offered outside a collision window ----------------------------------------------------


def established_pair(**overrides: Any) -> Pair:
    a, b = pair_settings((0x0A000002, 0x0A000001), **overrides)
    pair = Pair(a, b)
    pair.start()
    pair.run(until=5.0)
    assert pair.a.state is State.ESTABLISHED and pair.b.state is State.ESTABLISHED
    return pair


def offer(peer: Peer, now: float) -> tuple[int, list[PeerEffect]]:
    conn = peer.new_connection_id()
    return conn, peer.handle(Event(EventKind.STREAM_CONFIRMED, conn), now)


def test_dial_to_an_established_peer_is_refused_with_cease_7() -> None:
    pair = established_pair()
    session = pair.b.primary.conn
    conn, effects = offer(pair.b, pair.now)
    refused = [e for e in effects if isinstance(e, ConnectionRefused)]
    assert len(refused) == 1 and refused[0].conn == conn
    [send] = [e for e in effects if isinstance(e, Send)]
    assert send.conn == conn and isinstance(send.message, Notification)
    assert (send.message.code, send.message.subcode) == COLLISION
    assert Close(conn) in effects
    assert not any(isinstance(e, StateChanged) for e in effects)
    assert pair.b.state is State.ESTABLISHED and pair.b.primary.conn == session
    pair.run(until=pair.now + 30.0)
    assert_one_established_stream(pair)


def test_dial_to_a_stopped_peer_is_refused_with_cease_5() -> None:
    a, b = pair_settings((0x0A000002, 0x0A000001))
    pair = Pair(a, b)
    pair.start("a")  # b is configured but administratively down
    pair.run(until=20.0)
    refusals = [e for n, e in pair.log if n == "b" and isinstance(e, ConnectionRefused)]
    assert len(refusals) >= 2, "a keeps retrying, b keeps refusing"
    assert set(sent_notifications(pair, "b")) == {REJECTED}
    assert pair.b.state is State.IDLE
    assert pair.transitions("b") == []
    # a hears each refusal as a NOTIFICATION, restarts and goes on waiting in Active.
    assert pair.a.state is State.ACTIVE
    heard = [
        (t.notification.code, t.notification.subcode)
        for t in pair.transitions("a")
        if t.reason is Reason.NOTIFICATION_RECEIVED and t.notification is not None
    ]
    assert heard and set(heard) == {REJECTED}


def test_dial_to_a_peer_stopped_after_establishing_is_refused_with_cease_5() -> None:
    pair = established_pair()
    pair.apply("b", pair.b.stop(pair.now))
    pair.run(until=pair.now + 1.0)
    assert pair.b.state is State.IDLE
    conn, effects = offer(pair.b, pair.now)
    assert [e.conn for e in effects if isinstance(e, ConnectionRefused)] == [conn]
    [send] = [e for e in effects if isinstance(e, Send)]
    assert send.conn == conn and isinstance(send.message, Notification)
    assert (send.message.code, send.message.subcode) == REJECTED
    assert Close(conn) in effects
    assert pair.b.state is State.IDLE


# -- passive neighbours ----------------------------------------------------------------------------


def test_passive_neighbour_never_dials_but_accepts() -> None:
    a = Settings(local_asn=ASN_A, local_id=2, peer_asn=ASN_B, hold_time=9, passive=True)
    b = Settings(local_asn=ASN_B, local_id=1, peer_asn=ASN_A, hold_time=9, connect_retry_initial=1.0)
    pair = Pair(a, b)
    pair.start()
    pair.run(until=30.0)
    assert_one_established_stream(pair)
    assert not pair.a.primary.outbound
    # Even after the session drops and restarts, the passive side only listens.
    pair.apply("b", pair.b.stop(pair.now))
    pair.run(until=pair.now + 60.0)
    pair.start("b")
    pair.run(until=pair.now + 60.0)
    assert (pair.a.state, pair.b.state) == (State.ESTABLISHED, State.ESTABLISHED)
    assert not any(isinstance(e, Dial) for n, e in pair.log if n == "a")


def test_passive_neighbour_alone_waits_forever_without_timers() -> None:
    a = Settings(local_asn=ASN_A, local_id=2, peer_asn=ASN_B, passive=True)
    b = Settings(local_asn=ASN_B, local_id=1, peer_asn=ASN_A, passive=True)
    pair = Pair(a, b)
    pair.start()
    pair.run(until=3600.0)
    assert (pair.a.state, pair.b.state) == (State.ACTIVE, State.ACTIVE)
    assert pair.a.next_deadline() is None and pair.b.next_deadline() is None
    assert not any(isinstance(e, Dial) for _, e in pair.log)


# -- Peer internals during a collision (driven by hand) --------------------------------------------

LOCAL = Settings(local_asn=ASN_A, local_id=2, peer_asn=ASN_B, hold_time=9, connect_retry_initial=1.0)
REMOTE_OPEN = Open(asn=ASN_B, hold_time=9, bgp_identifier=1)


def peer_with_two_streams_in_open_sent() -> tuple[Peer, int, int]:
    """Our dial answered (primary, OpenSent), then the peer's dial accepted (contender, OpenSent)."""
    peer = Peer(LOCAL, random.Random(0))
    [dial] = [e for e in peer.start(0.0) if isinstance(e, Dial)]
    peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, dial.conn), 0.0)
    theirs, effects = offer(peer, 0.0)
    assert Send(theirs, LOCAL.open_message()) in effects
    assert peer.state is State.OPEN_SENT and peer.contender is not None
    return peer, dial.conn, theirs


def test_a_third_stream_during_a_collision_is_refused() -> None:
    peer, _, _ = peer_with_two_streams_in_open_sent()
    conn, effects = offer(peer, 0.0)
    assert any(isinstance(e, ConnectionRefused) and e.conn == conn for e in effects)
    assert Close(conn) in effects


def test_keepalive_is_held_until_the_other_open_arrives() -> None:
    # We (id 2) are higher: our dial must win even if the peer's stream finishes its handshake first.
    peer, ours, theirs = peer_with_two_streams_in_open_sent()
    peer.handle(message_event(theirs, REMOTE_OPEN), 0.0)
    assert peer.handle(message_event(theirs, KEEPALIVE), 0.0) == []  # held back
    assert peer.state is State.OPEN_SENT
    effects = peer.handle(message_event(ours, REMOTE_OPEN), 0.0)
    assert Send(theirs, cease(CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)) in effects
    assert Close(theirs) in effects
    assert peer.contender is None and peer.primary.conn == ours
    assert state_of(peer) is State.OPEN_CONFIRM
    peer.handle(message_event(ours, KEEPALIVE), 0.0)
    assert state_of(peer) is State.ESTABLISHED


def test_reported_states_form_a_chain_when_the_primary_loses_the_collision() -> None:
    """Our primary stream is the peer's dial; our own dial, answered later, must win (we are higher)."""
    peer = Peer(LOCAL, random.Random(0))
    log: list[PeerEffect] = []
    log += peer.start(0.0)
    [dial] = [e for e in log if isinstance(e, Dial)]
    theirs, effects = offer(peer, 0.0)  # adopted by the primary while our dial is pending
    log += effects
    log += peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, dial.conn), 0.0)  # our dial: contender
    log += peer.handle(message_event(theirs, REMOTE_OPEN), 0.0)  # primary -> OpenConfirm
    log += peer.handle(message_event(dial.conn, REMOTE_OPEN), 0.0)  # collision: primary dumped
    assert peer.primary.conn == dial.conn and peer.contender is None
    assert Send(theirs, cease(CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)) in log
    log += peer.handle(message_event(dial.conn, KEEPALIVE), 0.0)
    assert peer.state is State.ESTABLISHED
    changes = [e for e in log if isinstance(e, StateChanged)]
    assert changes[0].old is State.IDLE and changes[-1].new is State.ESTABLISHED
    _assert_chain(changes)


def _assert_chain(changes: list[StateChanged]) -> None:
    for before, after in itertools.pairwise(changes):
        assert before.new is after.old, f"unreported change {before.new.value} -> {after.old.value}"


def test_contender_whose_stream_fails_is_forgotten() -> None:
    peer, _, theirs = peer_with_two_streams_in_open_sent()
    effects = peer.handle(Event(EventKind.STREAM_FAILED, theirs), 0.0)
    assert not any(isinstance(e, StateChanged) for e in effects)
    later: list[PeerEffect] = []
    for second in range(1, 30):
        later += peer.poll(float(second))
    assert not any(isinstance(e, Dial) for e in later), "the contender dialled by itself"
    assert peer.contender is None


def test_primary_stream_failing_hands_the_session_to_the_contender() -> None:
    peer, ours, theirs = peer_with_two_streams_in_open_sent()
    peer.handle(message_event(theirs, REMOTE_OPEN), 0.0)  # contender -> OpenConfirm
    peer.handle(message_event(theirs, KEEPALIVE), 0.0)  # held: our own stream still waits for OPEN
    peer.handle(Event(EventKind.STREAM_FAILED, ours), 0.5)  # our stream dies before its OPEN
    peer.handle(message_event(theirs, KEEPALIVE), 1.0)
    assert peer.contender is None
    assert peer.state is State.ESTABLISHED
    assert peer.primary.conn == theirs
    peer.send(Update(withdrawn=("summarizer",)), 2.0)  # the speaker can use the session


def test_messages_behind_a_held_keepalive_keep_their_order() -> None:
    """The peer (higher id) wins with its own stream and sends End-of-RIB right after its KEEPALIVE."""
    peer = Peer(Settings(local_asn=65001, local_id=1, peer_asn=65002, hold_time=9), random.Random(0))
    dial = next(e for e in peer.start(0.0) if isinstance(e, Dial))
    peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, dial.conn), 0.0)
    theirs = peer.new_connection_id()
    peer.handle(Event(EventKind.STREAM_CONFIRMED, theirs), 0.0)
    remote_open = Open(asn=65002, hold_time=9, bgp_identifier=2)
    peer.handle(message_event(theirs, remote_open), 0.0)
    assert peer.handle(message_event(theirs, KEEPALIVE), 0.0) == []
    assert peer.handle(message_event(theirs, Update(end_of_rib=True)), 0.0) == []  # held behind it
    effects = peer.handle(message_event(dial.conn, remote_open), 0.0)
    assert peer.state is State.ESTABLISHED and peer.primary.conn == theirs
    assert UpdateReceived(Update(end_of_rib=True)) in effects
    assert not any(
        isinstance(e, Send) and isinstance(e.message, Notification) and e.conn == theirs for e in effects
    )
