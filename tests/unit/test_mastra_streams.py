"""The two Mastra stream formats decode to the same text pieces, however the bytes are chunked.

Mastra 1.x: Server-Sent Events of `{"type", "payload"}` chunks ending with `data: [DONE]`.
Mastra 0.10: the AI SDK 4 data stream, `<code>:<json>` lines, `e:` finishing a step and `d:` the message.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.agents.mastra import (
    DataStreamTextParser,
    LineSplitter,
    MastraError,
    MastraStreamDecoder,
    SseTextParser,
    StreamFormat,
    decode_stream,
    detect_stream_format,
)

MATH_PIECES = ["2 ", "+ ", "3 ", "* ", "4 ", "= ", "14"]
WEATHER_PIECES = ["The ", "weather ", "in ", "Paris ", "is ", "sunny, ", "21°C, ", "wind ", "5 ", "km/h."]


def _sse(*chunks: str) -> str:
    return "".join(f"data: {chunk}\n\n" for chunk in chunks)


def _delta(text: str) -> str:
    payload = '{"id":"1","text":"' + text + '"}'
    return '{"type":"text-delta","runId":"r1","from":"AGENT","payload":' + payload + "}"


#: A Mastra 1.x stream of the weather agent: a tool step, then the answer.
SSE_WEATHER = (
    _sse(
        '{"type":"start","runId":"r1","from":"AGENT","payload":{"id":"weatherAgent"}}',
        '{"type":"step-start","runId":"r1","from":"AGENT","payload":{"messageId":"m1"}}',
        '{"type":"tool-call","runId":"r1","from":"AGENT","payload":{"toolCallId":"c1","toolName":"weatherTool","args":{}}}',
        '{"type":"tool-result","runId":"r1","from":"AGENT","payload":{"toolCallId":"c1","result":{"t":21}}}',
        '{"type":"step-finish","runId":"r1","from":"AGENT","payload":{"stepResult":{"reason":"tool-calls"}}}',
        '{"type":"step-start","runId":"r1","from":"AGENT","payload":{"messageId":"m2"}}',
        '{"type":"text-start","runId":"r1","from":"AGENT","payload":{"id":"1"}}',
        *[_delta(piece) for piece in WEATHER_PIECES],
        '{"type":"text-end","runId":"r1","from":"AGENT","payload":{"id":"1"}}',
        '{"type":"step-finish","runId":"r1","from":"AGENT","payload":{"stepResult":{"reason":"stop"}}}',
        '{"type":"finish","runId":"r1","from":"AGENT","payload":{"stepResult":{"reason":"stop"}}}',
        "[DONE]",
    )
).encode()

#: A Mastra 0.10 stream of the math agent, as the transcripts' chunks show it.
DATA_MATH = (
    'f:{"messageId":"msg-1"}\n'
    + "".join(f'0:"{piece}"\n' for piece in MATH_PIECES)
    + 'e:{"finishReason":"stop","usage":{"promptTokens":6,"completionTokens":7},"isContinued":false}\n'
    + 'd:{"finishReason":"stop","usage":{"promptTokens":6,"completionTokens":7}}\n'
).encode()

#: A Mastra 0.10 stream with a tool step: its `e:` is not the end of the answer.
DATA_WEATHER = (
    'f:{"messageId":"msg-1"}\n'
    '9:{"toolCallId":"c1","toolName":"weatherTool","args":{"city":"Paris"}}\n'
    'a:{"toolCallId":"c1","result":{"t":21}}\n'
    'e:{"finishReason":"tool-calls","usage":{"promptTokens":6,"completionTokens":0},"isContinued":false}\n'
    'f:{"messageId":"msg-2"}\n'
    + "".join(f'0:"{piece}"\n' for piece in WEATHER_PIECES)
    + '2:[{"extra":true}]\n'
    + '8:[{"note":1}]\n'
    + 'e:{"finishReason":"stop","usage":{"promptTokens":6,"completionTokens":10},"isContinued":false}\n'
    + 'd:{"finishReason":"stop","usage":{"promptTokens":6,"completionTokens":10}}\n'
).encode()


# --- whole streams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected", "fmt"),
    [
        (SSE_WEATHER, WEATHER_PIECES, StreamFormat.SSE),
        (DATA_MATH, MATH_PIECES, StreamFormat.DATA_STREAM),
        (DATA_WEATHER, WEATHER_PIECES, StreamFormat.DATA_STREAM),
    ],
    ids=["sse-1.x", "data-0.10", "data-0.10-tool-step"],
)
def test_recorded_streams_decode_in_one_chunk_and_byte_by_byte(
    body: bytes, expected: list[str], fmt: StreamFormat
) -> None:
    assert decode_stream([body]) == expected
    assert decode_stream([body[i : i + 1] for i in range(len(body))]) == expected
    decoder = MastraStreamDecoder()
    decoder.feed(body)
    assert decoder.format is fmt
    assert decoder.complete


@pytest.mark.parametrize("body", [SSE_WEATHER, DATA_WEATHER], ids=["sse-1.x", "data-0.10"])
def test_every_split_point_gives_the_same_pieces(body: bytes) -> None:
    """Lines (and the two bytes of `°`) cut between two network reads are put back together."""
    expected = decode_stream([body])
    for cut in range(1, len(body)):
        assert decode_stream([body[:cut], body[cut:]]) == expected, cut


@given(st.data())
def test_any_chunking_gives_the_same_pieces(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from([SSE_WEATHER, DATA_MATH, DATA_WEATHER]))
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=len(body) - 1), max_size=30)))
    bounds = [0, *cuts, len(body)]
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_stream(chunks) == decode_stream([body])


def test_crlf_line_ends_split_between_chunks() -> None:
    body = SSE_WEATHER.replace(b"\n", b"\r\n")
    index = body.index(b"\r\n") + 1
    assert decode_stream([body[:index], body[index:]]) == WEATHER_PIECES
    assert decode_stream([DATA_MATH.replace(b"\n", b"\r")]) == MATH_PIECES


def test_unicode_line_separators_inside_json_do_not_split_a_line() -> None:
    """JSON.stringify leaves U+2028/U+2029 raw; str.splitlines() would cut these events in two."""
    sse = _sse(_delta("a\u2028b"), _delta("c\u2029d\x85"), '{"type":"finish","payload":{}}', "[DONE]")
    assert decode_stream([sse.encode()]) == ["a\u2028b", "c\u2029d\x85"]
    data = '0:"a\u2028b"\nd:{"finishReason":"stop"}\n'
    assert decode_stream([data.encode()]) == ["a\u2028b"]


# --- Mastra 1.x: Server-Sent Events ------------------------------------------------------------------------


def test_sse_done_ends_the_stream_and_later_lines_are_ignored() -> None:
    body = _sse(_delta("hi"), "[DONE]", _delta("ignored"), "not json at all")
    assert decode_stream([body]) == ["hi"]


def test_sse_ignores_other_chunk_types_comments_and_fields() -> None:
    parser = SseTextParser()
    lines = [
        ": keep-alive",
        "event: message",
        "id: 7",
        "retry: 1000",
        'data: {"type":"reasoning-delta","payload":{"text":"thinking"}}',
        "",
        'data: {"type":"tool-call","payload":{"toolName":"x","text":"no"}}',
        "",
        'data: {"type":"text-delta","payload":{"text":""}}',
        "",
        'data: {"type":"text-delta","payload":{"text":"yes"}}',
        "",
    ]
    assert [piece for line in lines for piece in parser.feed_line(line)] == ["yes"]
    assert not parser.complete


def test_sse_event_data_lines_are_joined_with_newlines() -> None:
    parser = SseTextParser()
    lines = ['data: {"type":"text-delta",', 'data: "payload":{"text":"x"}}', ""]
    assert [piece for line in lines for piece in parser.feed_line(line)] == ["x"]


def test_sse_without_space_after_colon() -> None:
    assert decode_stream([b'data:{"type":"text-delta","payload":{"text":"t"}}\n\ndata:[DONE]\n\n']) == ["t"]


def test_sse_finish_without_done_is_complete_and_the_last_event_needs_no_blank_line() -> None:
    body = _sse(_delta("a")) + 'data: {"type":"finish","payload":{}}'
    assert decode_stream([body]) == ["a"]


def test_sse_error_chunk_raises() -> None:
    body = _sse(_delta("a"), '{"type":"error","payload":{"error":{"message":"model overloaded"}}}')
    with pytest.raises(MastraError, match="model overloaded") as caught:
        decode_stream([body])
    assert caught.value.status is None


def test_sse_truncated_stream_raises() -> None:
    with pytest.raises(MastraError, match="ended before"):
        decode_stream([_sse(_delta("a"), _delta("b"))])


def test_sse_malformed_event_raises() -> None:
    with pytest.raises(MastraError, match="malformed"):
        decode_stream([b"data: {oops\n\n"])


# --- Mastra 0.10: the AI SDK 4 data stream -----------------------------------------------------------------


def test_data_stream_e_is_a_step_end_and_d_the_message_end() -> None:
    parser = DataStreamTextParser()
    assert parser.feed_line('0:"one "') == ["one "]
    parser.feed_line('e:{"finishReason":"tool-calls","isContinued":false}')
    assert not parser.complete
    assert parser.feed_line('0:"two"') == ["two"]
    parser.feed_line('d:{"finishReason":"stop"}')
    assert parser.complete
    assert parser.feed_line('0:"after the end"') == []


def test_data_stream_unknown_prefixes_are_ignored() -> None:
    lines = ['f:{"messageId":"m"}', '9:{"toolCallId":"c"}', 'a:{"result":1}', "2:[1]", "8:[{}]", 'g:"r"']
    lines += ['k:{"file":1}', 'z:"future part"', '0:"text"', 'd:{"finishReason":"stop"}']
    assert decode_stream(["\n".join(lines)]) == ["text"]


def test_data_stream_text_parts_are_json_strings() -> None:
    body = '0:"line\\nbreak \\"quoted\\" \\u00e9"\nd:{}\n'
    assert decode_stream([body.encode()]) == ['line\nbreak "quoted" é']


def test_data_stream_error_part_raises() -> None:
    with pytest.raises(MastraError, match="rate limited"):
        decode_stream([b'0:"partial"\n3:"rate limited"\n'])


def test_data_stream_without_d_raises() -> None:
    with pytest.raises(MastraError, match="ended before"):
        decode_stream([b'0:"a"\ne:{"finishReason":"stop","isContinued":false}\n'])


def test_data_stream_malformed_lines_raise() -> None:
    with pytest.raises(MastraError, match="malformed"):
        decode_stream([b'0:"a"\nthis is not a part\n'])
    with pytest.raises(MastraError, match="malformed"):
        decode_stream([b"0:not json\n"])
    with pytest.raises(MastraError, match="not a string"):
        decode_stream([b"0:42\n"])


# --- detection and line splitting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        ('data: {"type":"start"}', StreamFormat.SSE),
        ("data:[DONE]", StreamFormat.SSE),
        (": comment", StreamFormat.SSE),
        ("event: message", StreamFormat.SSE),
        ('0:"hello"', StreamFormat.DATA_STREAM),
        ('f:{"messageId":"m"}', StreamFormat.DATA_STREAM),
        ('d:{"finishReason":"stop"}', StreamFormat.DATA_STREAM),
        ("", None),
        ("   ", None),
    ],
)
def test_format_detection(line: str, fmt: StreamFormat | None) -> None:
    assert detect_stream_format(line) is fmt


def test_unrecognised_or_empty_streams_raise() -> None:
    with pytest.raises(MastraError, match="unrecognised"):
        decode_stream([b'{"text": "a JSON body, not a stream"}\n'])
    with pytest.raises(MastraError, match="empty"):
        decode_stream([b"", b"\n\n"])


def test_leading_blank_lines_before_the_first_event() -> None:
    assert decode_stream([b"\n\n" + DATA_MATH]) == MATH_PIECES


def test_line_splitter() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"\nb\rc") == ["b"]
    assert splitter.feed(b"\xc2") == []  # the first byte of "°"
    assert splitter.feed(b"\xb0d\n\n") == ["c°d", ""]
    assert splitter.feed(b"tail") == []
    assert splitter.close() == ["tail"]
    assert splitter.close() == []
