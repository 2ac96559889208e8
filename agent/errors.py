"""Why an agent stops: an error to tell its user (with an exit code), or a restart of its own process.

Kept apart so every part that may end the agent (start-up, the data-dir lock, the session with the hub)
raises the same two things, and `main_async` alone turns them into exit codes.
"""

from __future__ import annotations


class Reexec(Exception):
    """Enrolled just now: start the process afresh so enrollment-only libraries (cryptography) leave memory."""


class AgentError(Exception):
    """The agent cannot go on (message for the user; `exit_code` 2 for bad input, 1 for failures)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
