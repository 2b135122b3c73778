"""Property tests of the protobuf codec: every core message survives encode -> bytes -> decode."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.messages import (
    AgentAttributes,
    BackendProtocol,
    Capabilities,
    GracefulRestart,
    Health,
    Keepalive,
    LargeCommunity,
    Message,
    MultiplePaths,
    Notification,
    Open,
    Origin,
    PathAttributes,
    RouteRefresh,
    Update,
)
from agentmesh.transport import codec
from agentmesh.v1 import bgp_pb2

u32 = st.integers(0, 2**32 - 1)
text = st.text(max_size=20)
names = st.lists(st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}", fullmatch=True), max_size=5)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)

agents = st.builds(
    AgentAttributes,
    capabilities=st.lists(text, max_size=3).map(tuple),
    description=text,
    backend_protocol=st.sampled_from(BackendProtocol),
    region=text,
    input_schema=text,
    health=st.builds(Health, floats, floats, floats),
)
attributes = st.builds(
    PathAttributes,
    origin=st.sampled_from(Origin),
    as_path=st.lists(u32, max_size=5).map(tuple),
    next_hop=text,
    med=st.none() | u32,
    local_pref=st.none() | u32,
    communities=st.lists(u32, max_size=3).map(tuple),
    large_communities=st.lists(st.builds(LargeCommunity, u32, u32, u32), max_size=2).map(tuple),
    originator_id=st.none() | u32,
    cluster_list=st.lists(u32, max_size=3).map(tuple),
    agent=agents,
)
capabilities = st.builds(
    Capabilities,
    route_refresh=st.booleans(),
    graceful_restart=st.none() | st.builds(GracefulRestart, u32, st.booleans(), st.booleans()),
    multiple_paths=st.none() | st.builds(MultiplePaths, st.booleans(), st.booleans()),
)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    announced = tuple(draw(names))
    return Update(
        withdrawn=tuple(draw(names)),
        attributes=draw(attributes) if announced or draw(st.booleans()) else None,
        announced=announced,
        end_of_rib=draw(st.booleans()),
    )


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Open, asn=u32, hold_time=u32, bgp_identifier=u32, capabilities=capabilities, version=u32),
    updates(),
    st.just(Keepalive()),
    st.builds(Notification, u32, u32, st.binary(max_size=8), text),
    st.just(RouteRefresh()),
)


@settings(max_examples=300)
@given(messages)
def test_every_message_survives_the_wire(message: Message) -> None:
    wire = codec.encode(message).SerializeToString()
    assert codec.decode(bgp_pb2.BgpMessage.FromString(wire)) == message


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    """Bytes that parse as a BgpMessage decode to a message or to a DecodeError, nothing else."""
    try:
        wire = bgp_pb2.BgpMessage.FromString(data)
    except Exception:
        return  # not protobuf at all: gRPC would have failed the stream before us
    try:
        codec.decode(wire)
    except codec.DecodeError as error:
        assert error.notification.code in (1, 3)


def test_missing_origin_is_treat_as_withdraw_not_a_reset() -> None:
    wire = bgp_pb2.BgpMessage(
        update=bgp_pb2.Update(announced_names=["a.b"], path_attributes=bgp_pb2.PathAttributes())
    )
    update = codec.decode(wire)
    assert isinstance(update, Update)
    assert update.attributes is None and update.attribute_error == "ORIGIN missing"
