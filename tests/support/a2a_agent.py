"""A deterministic A2A agent built on the real a2a-sdk server, served by uvicorn on loopback.

The agent echoes: a message with the text `t` is answered with `a2a echo: t`. How it answers depends on its
`mode`, so that a client meets each shape of reply the protocol allows:

* `message`: one `Message` (the "immediate response" workflow);
* `task`: a `Task`, then the answer as several appended chunks of one artifact (one word a chunk), then a
  `completed` status.

A text starting with `fail` makes the agent fail: a `failed` status with a message in `task` mode, an
exception (which the SDK turns into a failed task or an error) in `message` mode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Role
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.mastra_servers import serving

Mode = Literal["message", "task"]

AGENT_NAME = "Echo Agent (test)"
#: The agent id an A2A backend derives from AGENT_NAME.
AGENT_ID = "Echo_Agent_test_"
AGENT_DESCRIPTION = "Echoes what it is told, deterministically."
RPC_PATH = "/a2a"


def reply_text(text: str) -> str:
    return f"a2a echo: {text}"


def agent_card(base_url: str, *, streaming: bool = True) -> AgentCard:
    return AgentCard(
        name=AGENT_NAME,
        description=AGENT_DESCRIPTION,
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=base_url + RPC_PATH, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="Echo",
                description="Repeats the input.",
                tags=["echo", "text"],
                examples=["hello"],
            ),
            AgentSkill(
                id="shout",
                name="Shout",
                description="Repeats the input, loudly.",
                tags=["text", "loud"],
            ),
        ],
    )


class EchoExecutor(AgentExecutor):
    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.inputs: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        self.inputs.append(text)
        if self.mode == "message":
            if text.startswith("fail"):
                raise RuntimeError(f"cannot do: {text}")
            await event_queue.enqueue_event(new_text_message(reply_text(text), context_id=context.context_id))
            return
        assert context.message is not None
        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if text.startswith("fail"):
            await updater.failed(
                new_text_message(f"cannot do: {text}", context_id=task.context_id, task_id=task.id)
            )
            return
        words = reply_text(text).split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            await updater.add_artifact(
                [new_text_part(word if last else word + " ")],
                artifact_id="answer",
                name="answer",
                append=index > 0,
                last_chunk=last,
            )
            await asyncio.sleep(0)
        await updater.complete(
            new_text_message("done", role=Role.ROLE_AGENT, context_id=task.context_id, task_id=task.id)
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise RuntimeError("cancel is not supported")


@dataclass
class A2aAgentServer:
    """The ASGI app of the agent, built once the URL it is served at is known, recording clients."""

    mode: Mode
    streaming: bool = True
    #: The client address (so the TCP connection) of every HTTP request, in order.
    clients: list[tuple[str, int] | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.executor = EchoExecutor(self.mode)
        self._app: ASGIApp | None = None

    def build(self, base_url: str) -> None:
        card = agent_card(base_url, streaming=self.streaming)
        handler = DefaultRequestHandler(
            agent_executor=self.executor, task_store=InMemoryTaskStore(), agent_card=card
        )
        self._app = Starlette(
            routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, RPC_PATH)]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            self.clients.append((client[0], client[1]) if client else None)
            self.paths.append(scope["path"])
        assert self._app is not None, "served before build()"
        await self._app(scope, receive, send)


@contextlib.asynccontextmanager
async def a2a_agent(
    mode: Mode = "task", *, streaming: bool = True
) -> AsyncIterator[tuple[A2aAgentServer, str]]:
    """The echo agent, served on 127.0.0.1 at a port the OS picks; yields it and its base URL."""
    server = A2aAgentServer(mode, streaming=streaming)
    async with serving(server) as url:
        server.build(url)
        yield server, url
