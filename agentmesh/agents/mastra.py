"""The `mastra` backend: the agents of one Mastra server, over its HTTP API.

Two generations of Mastra are in use and both must work (DESIGN.md §3):

* **Mastra 0.10** accepts any content type on POSTs, answers an unknown agent with 500, and streams the
  AI SDK 4 *data stream*: one part per line, `<code>:<json>`, where `0:"text"` is a text part, `e:{…}`
  ends a step (a tool step is followed by more steps), `d:{…}` ends the message and `3:"…"` is an error.
* **Mastra 1.x** rejects POSTs that are not `content-type: application/json` (the old proxy sent
  `text/plain`), answers an unknown agent with 404, and streams Server-Sent Events whose `data:` lines are
  `{"type": …, "payload": …}` chunks (`text-delta` carries `payload.text`), ending with `data: [DONE]`.

Which generation answered is read from the stream itself, not from its headers: both generations send
`text/plain` on some deployments, while the two line grammars cannot be confused (`data:` versus one
character and a colon).

The stream decoders are pure (bytes in, text pieces out) so that the unit tests drive them without sockets.
Lines are split on CR, LF and CRLF only: `str.splitlines()` (and so `aiter_lines()`) also splits on U+2028
and friends, which JavaScript's `JSON.stringify` leaves unescaped inside strings, and would cut a JSON
event in two.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import quote

import httpx2

from agentmesh.agents.base import AgentInfo, AgentReply, AgentRequest, RequestError
from agentmesh.bgp.messages import BackendProtocol

#: The environment variable the old proxy was configured with, and its default.
MASTRA_SERVERS_ENV = "MASTRA_SERVERS"
DEFAULT_MASTRA_SERVER = "http://localhost:4111"

_SEPARATORS = re.compile(r"[\s,]+")


def parse_mastra_servers(value: str | None) -> list[str]:
    """The server URLs of a `MASTRA_SERVERS` value: separated by spaces and/or commas, in order."""
    urls = [part for part in _SEPARATORS.split(value or "") if part]
    return urls or [DEFAULT_MASTRA_SERVER]


def named_mastra_servers(value: str | None) -> list[tuple[str, str]]:
    """`(name, url)` pairs of a `MASTRA_SERVERS` value, named `server0..N` in order as the old proxy did."""
    return [(f"server{index}", url) for index, url in enumerate(parse_mastra_servers(value))]


class MastraError(Exception):
    """A Mastra server failed a request.

    `status` is the HTTP status when the server answered with an error status, and None when no status
    describes the failure (the server cannot be reached, the body is malformed, an error inside a stream).
    `message` is the server's own error text where it gave one.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message if status is None else f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class MastraRequestError(MastraError, RequestError):
    """The server refused the request itself (a 4xx status: an unknown agent on 1.x, a bad body).

    It answered, so this is no sign of ill health; 408 and 429 are not among these: a server that times
    out or sheds load is unwell.
    """


def _status_error(response: httpx2.Response) -> MastraError:
    """The error of a response with an error status."""
    status = response.status_code
    kind = MastraRequestError if 400 <= status < 500 and status not in (408, 429) else MastraError
    return kind(status, _response_error(response))


# --- stream decoding (pure) --------------------------------------------------------------------------------


class StreamFormat(Enum):
    """The two streaming formats of `POST /api/agents/:id/stream`."""

    #: Mastra 1.x: Server-Sent Events of `{"type", "payload"}` chunks, ending with `data: [DONE]`.
    SSE = "sse"
    #: Mastra 0.10: the AI SDK 4 data stream, `<code>:<json>` lines.
    DATA_STREAM = "data-stream"


_LINE_END = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Bytes (or text) in any chunking to complete lines, split on CRLF, CR or LF only.

    UTF-8 sequences and CRLF pairs cut between two chunks are put back together.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        # A chunk ended with CR: an LF at the start of the next one belongs to the same line end.
        self._skip_lf = False

    def feed(self, data: bytes | str) -> list[str]:
        text = self._decoder.decode(data) if isinstance(data, bytes) else data
        if not text:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text
        lines: list[str] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            lines.append(buffer[start : match.start()])
            start = match.end()
        self._buffer = buffer[start:]
        # A trailing CR always ends a line here, and its LF may still be on the way.
        self._skip_lf = buffer.endswith("\r")
        return lines

    def close(self) -> list[str]:
        """The last line, when the input did not end with a line end."""
        rest = self._buffer + self._decoder.decode(b"", final=True)
        self._buffer = ""
        return [rest] if rest else []


class SseTextParser:
    """Mastra 1.x streams: Server-Sent Events (WHATWG HTML §9.2.6) of JSON chunks, to text pieces.

    An event's `data:` lines are joined and dispatched at the blank line that ends it. A `text-delta`
    chunk gives `payload.text`; `finish` ends the run and `[DONE]` ends the stream; an `error` chunk
    raises. Every other chunk type (`start`, `step-start`, `tool-call`, `step-finish`, …) carries no text.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        #: `data: [DONE]` was seen: nothing after it is read.
        self.done = False
        #: The run's `finish` chunk was seen.
        self.finished = False

    @property
    def complete(self) -> bool:
        return self.done or self.finished

    def feed_line(self, line: str) -> list[str]:
        if self.done:
            return []
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, used as a keep-alive
            return []
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        # `event`, `id` and `retry` do not change what the text is; unknown fields are ignored (§9.2.6).
        return []

    def close(self) -> list[str]:
        """End of input: an event still waiting for its blank line is dispatched."""
        return self._dispatch()

    def _dispatch(self) -> list[str]:
        if not self._data:
            return []
        data = "\n".join(self._data)
        self._data = []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise MastraError(None, f"malformed stream event {data[:200]!r}: {error}") from error
        if not isinstance(chunk, dict):
            raise MastraError(None, f"malformed stream event {data[:200]!r}: not an object")
        kind = chunk.get("type")
        payload = chunk.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        if kind == "text-delta":
            text = payload.get("text", chunk.get("text"))
            return [text] if isinstance(text, str) and text else []
        if kind == "error":
            raise MastraError(None, _error_text(payload.get("error", chunk.get("error")), "stream error"))
        if kind == "finish":
            self.finished = True
        return []


_DATA_STREAM_PART = re.compile(r"([0-9a-z]):(.*)", re.DOTALL)


class DataStreamTextParser:
    """Mastra 0.10 streams: the AI SDK 4 data stream, `<code>:<json>` per line, to text pieces.

    `0` is a text part (a JSON string); `3` is an error (a JSON string); `d` finishes the message; `e`
    finishes a step only, since a tool step is followed by more steps and more text. Every other code
    (`f` start step, `9` tool call, `a` tool result, `2` data, `8` annotations, `g` reasoning, …) carries
    no answer text and is ignored.
    """

    def __init__(self) -> None:
        #: The `d:` finish-message part was seen: nothing after it is read.
        self.done = False

    @property
    def complete(self) -> bool:
        return self.done

    def feed_line(self, line: str) -> list[str]:
        if self.done or not line.strip():
            return []
        match = _DATA_STREAM_PART.fullmatch(line)
        if match is None:
            raise MastraError(None, f"malformed data stream line {line[:200]!r}")
        code, value = match.groups()
        if code == "d":
            self.done = True
            return []
        if code not in ("0", "3"):
            return []
        try:
            part = json.loads(value)
        except ValueError as error:
            raise MastraError(None, f"malformed data stream part {line[:200]!r}: {error}") from error
        if code == "3":
            raise MastraError(None, _error_text(part, "stream error"))
        if not isinstance(part, str):
            raise MastraError(None, f"malformed text part {line[:200]!r}: not a string")
        return [part] if part else []

    def close(self) -> list[str]:
        return []


_SSE_FIELDS = ("data:", "event:", "id:", "retry:", ":")


def detect_stream_format(line: str) -> StreamFormat | None:
    """The format a stream's first non-blank line belongs to; None for a blank line."""
    if not line.strip():
        return None
    if line.startswith(_SSE_FIELDS) or line in ("data", "event", "id", "retry"):
        return StreamFormat.SSE
    if _DATA_STREAM_PART.fullmatch(line):
        return StreamFormat.DATA_STREAM
    raise MastraError(None, f"unrecognised stream format, first line {line[:200]!r}")


class MastraStreamDecoder:
    """Response bytes of `POST /api/agents/:id/stream`, of either generation, to text pieces.

    `feed` takes the body in whatever chunks the network delivers; `close` at the end of the body raises
    `MastraError` if the stream stopped before its finish marker (a truncated answer is not an answer).
    """

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._parser: SseTextParser | DataStreamTextParser | None = None
        self.format: StreamFormat | None = None

    @property
    def complete(self) -> bool:
        return self._parser is not None and self._parser.complete

    def feed(self, data: bytes | str) -> list[str]:
        return self._feed_lines(self._lines.feed(data))

    def close(self) -> list[str]:
        pieces = self._feed_lines(self._lines.close())
        if self._parser is None:
            raise MastraError(None, "the stream was empty")
        pieces.extend(self._parser.close())
        if not self._parser.complete:
            raise MastraError(None, "the stream ended before its finish event")
        return pieces

    def _feed_lines(self, lines: Iterable[str]) -> list[str]:
        pieces: list[str] = []
        for line in lines:
            if self._parser is None:
                self.format = detect_stream_format(line)
                if self.format is None:
                    continue
                self._parser = SseTextParser() if self.format is StreamFormat.SSE else DataStreamTextParser()
            pieces.extend(self._parser.feed_line(line))
        return pieces


def decode_stream(chunks: Iterable[bytes | str]) -> list[str]:
    """Decode a whole stream body given as chunks (for tests and for replaying recorded bodies)."""
    decoder = MastraStreamDecoder()
    pieces: list[str] = []
    for chunk in chunks:
        pieces.extend(decoder.feed(chunk))
    pieces.extend(decoder.close())
    return pieces


def _error_text(value: Any, default: str) -> str:
    """The text of an error as Mastra encodes it: a string, or an object with `message` or `error`."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        for key in ("message", "error"):
            if key in value:
                return _error_text(value[key], default)
    if value is None:
        return default
    return json.dumps(value)


# --- the backend -------------------------------------------------------------------------------------------

#: Generation can take long (a model, tools); connecting to a server cannot.
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 5.0


class MastraBackend:
    """The agents of one Mastra server (either generation), through one reused HTTP client."""

    protocol = BackendProtocol.MASTRA

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._base = url.rstrip("/")
        # One client for the backend's lifetime: its pool keeps connections to the server alive between
        # calls. Redirects are not followed: a POST must not silently turn into a GET.
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )
        #: Why the latest probe failed, None after one that worked.
        self.last_probe_error: str | None = None

    def __repr__(self) -> str:
        return f"MastraBackend({self.name!r}, {self.url!r})"

    async def discover(self) -> list[AgentInfo]:
        listing = await self._agent_listing()
        return [_agent_info(agent_id, entry) for agent_id, entry in listing.items()]

    async def call(self, agent_id: str, request: AgentRequest) -> AgentReply:
        path = f"{_agent_path(agent_id)}/generate"
        try:
            response = await self._client.post(self._base + path, json=request_body(request))
        except (httpx2.HTTPError, httpx2.InvalidURL) as error:
            raise self._transport_error(error) from error
        if not response.is_success:
            raise _status_error(response)
        try:
            data = response.json()
        except ValueError as error:
            raise MastraError(None, f"{path} answered a body that is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise MastraError(None, f"{path} answered JSON that is not an object")
        text = data.get("text")
        if text is None:
            text = ""
        elif not isinstance(text, str):
            raise MastraError(None, f"{path} answered a `text` that is not a string")
        return AgentReply(text=text, data=data)

    async def stream(self, agent_id: str, request: AgentRequest) -> AsyncIterator[str]:
        path = f"{_agent_path(agent_id)}/stream"
        decoder = MastraStreamDecoder()
        try:
            async with self._client.stream("POST", self._base + path, json=request_body(request)) as response:
                if not response.is_success:
                    await response.aread()
                    raise _status_error(response)
                # Read to the end of the body even after the finish marker, so that the connection goes
                # back to the pool instead of being closed half-read.
                async for chunk in response.aiter_bytes():
                    for piece in decoder.feed(chunk):
                        yield piece
        except (httpx2.HTTPError, httpx2.InvalidURL) as error:
            raise self._transport_error(error) from error
        for piece in decoder.close():
            yield piece

    async def probe(self) -> bool:
        """Fetch the agent list, as discovery does: the server answers, and answers like Mastra."""
        try:
            await self._agent_listing()
        except MastraError as error:
            self.last_probe_error = str(error)
            return False
        self.last_probe_error = None
        return True

    async def close(self) -> None:
        await self._client.aclose()

    async def _agent_listing(self) -> dict[str, Any]:
        listing = await self._get_json("/api/agents")
        if not isinstance(listing, dict):
            raise MastraError(None, f"{self._base}/api/agents did not answer an object keyed by agent id")
        return listing

    async def _get_json(self, path: str) -> Any:
        try:
            response = await self._client.get(self._base + path)
        except (httpx2.HTTPError, httpx2.InvalidURL) as error:
            raise self._transport_error(error) from error
        if not response.is_success:
            raise _status_error(response)
        try:
            return response.json()
        except ValueError as error:
            raise MastraError(None, f"{path} answered a body that is not JSON: {error}") from error

    def _transport_error(self, error: Exception) -> MastraError:
        detail = str(error) or type(error).__name__
        if isinstance(error, httpx2.TimeoutException):
            return MastraError(
                None, f"Mastra server {self._base} timed out ({type(error).__name__}): {detail}"
            )
        if isinstance(error, httpx2.ConnectError):
            return MastraError(None, f"cannot connect to Mastra server {self._base}: {detail}")
        return MastraError(
            None, f"request to Mastra server {self._base} failed ({type(error).__name__}): {detail}"
        )


def mastra_backends(value: str | None) -> list[MastraBackend]:
    """One backend per server of a `MASTRA_SERVERS` value, named `server0..N`."""
    return [MastraBackend(name, url) for name, url in named_mastra_servers(value)]


def request_body(request: AgentRequest) -> dict[str, Any]:
    """The JSON body of `generate` and `stream`.

    `agentOptions` are merged in first so that they cannot replace the conversation, the thread or the
    resource that the request names explicitly. JSON arguments travel as one user message of JSON text.
    """
    body: dict[str, Any] = {}
    agent_options = request.options.get("agentOptions")
    if isinstance(agent_options, Mapping):
        body.update(agent_options)
    messages = [{"role": message.role, "content": message.content} for message in request.messages]
    if request.arguments is not None:
        messages.append({"role": "user", "content": json.dumps(dict(request.arguments), ensure_ascii=False)})
    body["messages"] = messages
    for key in ("threadId", "resourceId"):
        value = request.options.get(key)
        if value is not None:
            body[key] = value
    return body


def _agent_path(agent_id: str) -> str:
    return f"/api/agents/{quote(agent_id, safe='')}"


def _agent_info(agent_id: str, entry: Any) -> AgentInfo:
    entry = entry if isinstance(entry, Mapping) else {}
    description = next(
        (text for key in ("description", "instructions", "name") if (text := _plain_text(entry.get(key)))),
        "",
    )
    return AgentInfo(id=agent_id, description=description, capabilities=_tool_names(entry.get("tools")))


def _plain_text(value: Any) -> str:
    """A description-like field: a string, or (Mastra 1.x instructions) a list of strings or messages."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        parts = [_plain_text(item) for item in value]
        return "\n".join(part for part in parts if part)
    if isinstance(value, Mapping):
        return _plain_text(value.get("content", value.get("text")))
    return ""


def _tool_names(tools: Any) -> tuple[str, ...]:
    """Tool ids: Mastra lists tools as an object keyed by id; a list of tools or names is accepted too."""
    if isinstance(tools, Mapping):
        return tuple(str(key) for key in tools)
    if isinstance(tools, list):
        names = (
            item if isinstance(item, str) else item.get("id") or item.get("name")
            for item in tools
            if isinstance(item, str | Mapping)
        )
        return tuple(str(name) for name in names if name)
    return ()


def _response_error(response: httpx2.Response) -> str:
    """The server's error text: `{"error": …}` (both generations) or `{"message": …}`, else the body."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping) and ("error" in body or "message" in body):
        return _error_text(body.get("error", body.get("message")), text)
    return text or response.reason_phrase or f"HTTP {response.status_code}"
