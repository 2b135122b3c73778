"""The `a2a` backend: one A2A agent, found by its AgentCard and called with the a2a-sdk client (DESIGN.md §3).

An A2A server publishes one AgentCard at `/.well-known/agent-card.json`. The backend advertises it as one
agent whose id is the card's name reduced to `[A-Za-z0-9_-]` and whose capabilities are the ids and tags of
the card's skills.

A call sends one user message and reads the reply, which an A2A agent gives in one of two shapes: a
`Message` (an immediate answer), or a `Task` whose answer is in its artifacts (streamed as
`TaskArtifactUpdateEvent`s, possibly in appended chunks) and whose end is a `TaskStatusUpdateEvent`. The
text of a reply is the text of the message, or else the task's artifact text (the chunks of an artifact
concatenated, artifacts separated by a newline), or, for a task without artifact text, the text of its
final status message. A task that ends failed, rejected, canceled or waiting for authentication is an
error.

The SDK's client streams (`message/stream`) when the card says the agent can, and otherwise sends one
request and gets the whole reply; `stream` yields text as it arrives in the first case and the whole text
once in the second.

One `httpx.AsyncClient` (the SDK's HTTP library) is kept for the backend's lifetime and shared by the card
fetches and by the A2A client, which is made from the card once and reused until the card changes.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
)
from google.protobuf.json_format import MessageToDict

from agentmesh.agents.base import AgentInfo, AgentReply, AgentRequest, RequestError
from agentmesh.bgp.messages import BackendProtocol

#: An agent can take long to answer; connecting to its server cannot.
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 5.0

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

#: Task states that end a call without an answer.
_FAILED_STATES = {
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_REJECTED: "was rejected",
    TaskState.TASK_STATE_CANCELED: "was canceled",
    TaskState.TASK_STATE_AUTH_REQUIRED: "requires authentication",
}


class A2aError(Exception):
    """An A2A agent could not be used: unreachable, a bad card, a protocol error, a failed task."""


class A2aRequestError(A2aError, RequestError):
    """The request cannot be sent as it is: nothing to send, or an agent this server does not have."""


def agent_id_of(card: AgentCard) -> str:
    """The id an agent is advertised under: its card's name, runs of other characters turned into `_`."""
    return _UNSAFE.sub("_", card.name.strip()) or "agent"


def agent_info_of(card: AgentCard) -> AgentInfo:
    """The AgentInfo of a card: capabilities are skill ids, then skill tags, each once, in card order."""
    capabilities: dict[str, None] = {}
    for skill in card.skills:
        if skill.id:
            capabilities.setdefault(skill.id)
    for skill in card.skills:
        for tag in skill.tags:
            if tag:
                capabilities.setdefault(tag)
    return AgentInfo(
        id=agent_id_of(card), description=card.description.strip(), capabilities=tuple(capabilities)
    )


def message_text(request: AgentRequest) -> str:
    """What is sent to the agent: the JSON text of the arguments if any, else the last user message."""
    if request.arguments is not None:
        return json.dumps(dict(request.arguments), ensure_ascii=False)
    return request.last_user_text()


class ReplyCollector:
    """The events of one `SendMessage` (a stream, or the single reply) folded into one reply.

    `feed` returns the text the event adds to the answer, so that a stream can pass it on at once.
    """

    def __init__(self) -> None:
        self.message: Message | None = None
        self.task: Task | None = None
        #: The text `feed` has returned so far.
        self._sent = ""

    def feed(self, event: StreamResponse) -> str:
        if event.HasField("message"):
            self.message = Message()
            self.message.CopyFrom(event.message)
        elif event.HasField("task"):
            self.task = Task()
            self.task.CopyFrom(event.task)
        elif event.HasField("status_update"):
            update = event.status_update
            self._task_for(update.task_id, update.context_id).status.CopyFrom(update.status)
        elif event.HasField("artifact_update"):
            self._apply_artifact(event.artifact_update)
        if self.message is not None:
            return self._advance(_text_of_message(self.message))
        return self._advance(self._artifact_text())

    @property
    def empty(self) -> bool:
        return self.message is None and self.task is None

    def text(self) -> str:
        if self.message is not None:
            return _text_of_message(self.message)
        if self.task is None:
            return ""
        return self._artifact_text() or self._status_text()

    def unsent(self) -> str:
        """At the end of a stream: the answer when no text came as it streamed (a status message), else ""."""
        return "" if self._sent else self.text()

    def data(self) -> dict[str, Any]:
        """The reply as JSON, in the shape of A2A's SendMessageResponse: `{"message": …}` or `{"task": …}`."""
        if self.message is not None:
            response = SendMessageResponse(message=self.message)
        else:
            response = SendMessageResponse(task=self.task)
        return MessageToDict(response)

    def failure(self) -> str | None:
        """Why the task did not give an answer, when it ended in a failed state."""
        if self.message is not None or self.task is None:
            return None
        what = _FAILED_STATES.get(self.task.status.state)
        if what is None:
            return None
        detail = self._status_text()
        return f"task {self.task.id} {what}" + (f": {detail}" if detail else "")

    def _task_for(self, task_id: str, context_id: str) -> Task:
        if self.task is None:
            self.task = Task(id=task_id, context_id=context_id)
        return self.task

    def _apply_artifact(self, update: TaskArtifactUpdateEvent) -> None:
        task = self._task_for(update.task_id, update.context_id)
        incoming = update.artifact
        for artifact in task.artifacts:
            if artifact.artifact_id == incoming.artifact_id:
                if update.append:
                    artifact.parts.extend(incoming.parts)
                else:
                    artifact.CopyFrom(incoming)
                return
        task.artifacts.append(incoming)

    def _artifact_text(self) -> str:
        if self.task is None:
            return ""
        texts = (_text_of_artifact(artifact) for artifact in self.task.artifacts)
        return "\n".join(text for text in texts if text)

    def _status_text(self) -> str:
        if self.task is None or not self.task.status.HasField("message"):
            return ""
        return _text_of_message(self.task.status.message)

    def _advance(self, text: str) -> str:
        # Text that does not extend what was sent (an artifact replaced mid-stream) cannot be taken back:
        # nothing is sent for it, and `call` is the way to read such a reply.
        if not text.startswith(self._sent):
            return ""
        piece = text[len(self._sent) :]
        self._sent = text
        return piece


def _text_of_message(message: Message) -> str:
    return "\n".join(part.text for part in message.parts if part.HasField("text"))


def _text_of_artifact(artifact: Artifact) -> str:
    # Appended chunks of one artifact are pieces of one text.
    return "".join(part.text for part in artifact.parts if part.HasField("text"))


class A2aBackend:
    """The agent of one A2A server, through one reused HTTP client and one reused A2A client."""

    protocol = BackendProtocol.A2A

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._base = url.rstrip("/")
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout), transport=transport
        )
        # The factory marks the shared HTTP client with the protocol version header; it never closes it.
        self._factory = ClientFactory(ClientConfig(streaming=True, httpx_client=self._http))
        self._card: AgentCard | None = None
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: Why the latest probe failed, None after one that worked.
        self.last_probe_error: str | None = None

    def __repr__(self) -> str:
        return f"A2aBackend({self.name!r}, {self.url!r})"

    # --- the Backend protocol ------------------------------------------------------------------------------

    async def discover(self) -> list[AgentInfo]:
        card = await self._refresh_card()
        return [agent_info_of(card)]

    async def call(self, agent_id: str, request: AgentRequest) -> AgentReply:
        collector = ReplyCollector()
        async for _ in self._events(agent_id, request, collector):
            pass
        return self._reply(collector)

    async def stream(self, agent_id: str, request: AgentRequest) -> AsyncIterator[str]:
        collector = ReplyCollector()
        async for piece in self._events(agent_id, request, collector):
            if piece:
                yield piece
        # Raises for a failed task, after whatever text came before the failure.
        self._reply(collector)
        rest = collector.unsent()
        if rest:
            yield rest

    async def probe(self) -> bool:
        """Fetch the agent card, as discovery does: the server answers and still publishes its agent."""
        try:
            await self._refresh_card()
        except A2aError as error:
            self.last_probe_error = str(error)
            return False
        self.last_probe_error = None
        return True

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            client, self._client = self._client, None
            try:
                if client is not None:
                    await client.close()
            finally:
                await self._http.aclose()

    # --- internals -----------------------------------------------------------------------------------------

    async def _fetch_card(self) -> AgentCard:
        if self._closed:
            raise A2aError(f"A2A backend {self.name!r} is closed")
        try:
            return await A2ACardResolver(self._http, self._base).get_agent_card()
        except Exception as error:
            raise A2aError(f"cannot get the agent card of A2A server {self._base}: {_text(error)}") from error

    async def _refresh_card(self) -> AgentCard:
        """Fetch the card; a changed card retires the A2A client made from the old one."""
        card = await self._fetch_card()
        async with self._lock:
            if self._card != card:
                self._card = card
                old, self._client = self._client, None
                if old is not None:
                    await old.close()  # the HTTP client is shared: this only lets the old client go
            return card

    async def _client_for(self, agent_id: str) -> Client:
        card = self._card
        if card is None or agent_id_of(card) != agent_id:
            # First use, or maybe the agent was renamed: look at the card as it is now.
            card = await self._refresh_card()
            if agent_id_of(card) != agent_id:
                raise A2aRequestError(
                    f"A2A server {self._base} has no agent {agent_id!r} (its agent is {agent_id_of(card)!r})"
                )
        async with self._lock:
            if self._closed:
                raise A2aError(f"A2A backend {self.name!r} is closed")
            if self._client is None:
                try:
                    self._client = self._factory.create(card)
                except Exception as error:
                    raise A2aError(
                        f"cannot make an A2A client for {self._base} from its card: {_text(error)}"
                    ) from error
            return self._client

    async def _events(
        self, agent_id: str, request: AgentRequest, collector: ReplyCollector
    ) -> AsyncIterator[str]:
        """Send the request and feed every reply event to `collector`, yielding the text each one adds."""
        text = message_text(request)
        if not text:
            raise A2aRequestError("nothing to send: the request has neither a user message nor arguments")
        client = await self._client_for(agent_id)
        message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=[Part(text=text)])
        try:
            async for event in client.send_message(SendMessageRequest(message=message)):
                yield collector.feed(event)
        except A2aError:
            raise
        except Exception as error:
            raise A2aError(f"A2A agent {agent_id!r} at {self._base} failed: {_text(error)}") from error
        if collector.empty:
            raise A2aError(f"A2A agent {agent_id!r} at {self._base} answered nothing")

    def _reply(self, collector: ReplyCollector) -> AgentReply:
        failure = collector.failure()
        if failure is not None:
            raise A2aError(f"A2A agent at {self._base}: {failure}")
        return AgentReply(text=collector.text(), data=collector.data())


def _text(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return _text(error.exceptions[0])
    return str(error) or type(error).__name__
