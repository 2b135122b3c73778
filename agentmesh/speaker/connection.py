"""One BGP connection at run time: pumps a stream between the wire and the node's owner task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from agentmesh.bgp.messages import Message
from agentmesh.transport import codec
from agentmesh.transport.streams import Stream

#: What the reader hands to the owner: a message, a message that failed to decode, or None when the
#: stream ended (the TcpConnectionFails of RFC 4271 §8.1.3).
Received = Message | codec.DecodeError | None


class Connection:
    """Writes queued messages in order and delivers received ones; ends when either side closes.

    `close()` flushes what was queued before it, then finishes the call: that is how a NOTIFICATION
    reaches the peer before the stream goes away (RFC 4271 §6).
    """

    def __init__(
        self,
        conn: int,
        stream: Stream,
        deliver: Callable[[int, Received], None],
        drained: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self._stream = stream
        self._deliver = deliver
        self._drained = drained
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._closing = False
        self._drain_wanted = False

    @property
    def backlog(self) -> int:
        """Messages queued and not yet handed to gRPC."""
        return self._outbox.qsize()

    def notify_when_drained(self) -> None:
        """Call `drained` once the backlog is empty: the owner refills a peer only as fast as it reads."""
        self._drain_wanted = True

    def send(self, message: Message) -> None:
        if not self._closing:
            self._outbox.put_nowait(message)

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._outbox.put_nowait(None)

    def fail(self) -> None:
        """The stream died before `run`: tell the owner once, as `run` would have."""
        if not self._closing:
            self._closing = True
            self._deliver(self.conn, None)

    async def run(self) -> None:
        """Pump until closed locally (after flushing) or by the peer."""
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # grpc cancels a server handler when the dialler goes away: that is a failed stream.
            if not self._closing:
                self._closing = True
                self._deliver(self.conn, None)
            raise
        finally:
            if not writer.done():
                # The peer went away first: nothing queued can reach it any more.
                self._closing = True
                writer.cancel()
            if not reader.done():
                reader.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stream.close()

    async def _read(self) -> None:
        while True:
            wire = await self._stream.read()
            if wire is None:
                if not self._closing:
                    self._deliver(self.conn, None)
                return
            try:
                received: Received = codec.decode(wire)
            except codec.DecodeError as error:
                received = error
            self._deliver(self.conn, received)

    async def _write(self) -> None:
        while (message := await self._outbox.get()) is not None:
            try:
                await self._stream.write(codec.encode(message))
            except Exception:
                self._closing = True
                self._deliver(self.conn, None)
                return
            if self._drain_wanted and self._outbox.empty() and self._drained is not None:
                self._drain_wanted = False
                self._drained()
