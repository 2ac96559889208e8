"""Answers to what the hub asks of a device on demand: a service's log lines and a short load profile.

The answers go through the outbox like every other message; a profile runs for seconds, so it runs in the
background (off the event loop) and the session keeps receiving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from agent.profiler import profile_service
from agent.state import AgentState
from agent.supervisor import tail
from protos.edgeport.v1 import agent_pb2

DEFAULT_LOG_LINES = 200


class HubRequests:
    """Answers LogRequests and ProfileRequests from the state and the runtimes' logs of one agent.

    `log_path(service, generation)` names a runtime's log file; `queue` hands the answer to the outbox.
    """

    def __init__(
        self,
        state: AgentState,
        log_path: Callable[[str, int], Path],
        queue: Callable[[agent_pb2.AgentMessage], None],
        runtime_host: str = "127.0.0.1",
    ) -> None:
        self.state = state
        self.log_path = log_path
        self.queue = queue
        self.runtime_host = runtime_host
        self._background: set[asyncio.Task[None]] = set()

    def logs(self, request: agent_pb2.LogRequest) -> agent_pb2.LogChunk:
        """The last lines of the service's serving generation (or of the one that failed last)."""
        rec = self.state.service(request.service)
        lines: list[str] = []
        if rec is not None:
            generation = rec.generation or rec.failed_generation
            lines = tail(self.log_path(rec.name, generation), request.lines or DEFAULT_LOG_LINES)
        return agent_pb2.LogChunk(request_id=request.request_id, service=request.service, lines=lines)

    def answer_logs(self, request: agent_pb2.LogRequest) -> None:
        """Queue the answer to a LogRequest."""
        self.queue(agent_pb2.AgentMessage(logs=self.logs(request)))

    def answer_profile(self, request: agent_pb2.ProfileRequest) -> None:
        """Profile the service in the background; its ProfileResult is queued when done."""
        task = asyncio.create_task(self._profile(request))
        self._background.add(task)  # keep a reference until it ends
        task.add_done_callback(self._background.discard)

    async def _profile(self, request: agent_pb2.ProfileRequest) -> None:
        rec = self.state.service(request.service)
        result = await asyncio.to_thread(profile_service, rec, request, self.runtime_host)
        self.queue(agent_pb2.AgentMessage(profile=result))
