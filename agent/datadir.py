"""One agent per data dir, held by an exclusive lock on `DATA_DIR/agent.lock`.

Two agents on one data dir would both supervise, adopt and stop the same runtimes and write one
state database; the second is refused at start with a clear error instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from agent.errors import AgentError


class DataDirLock:
    """The lock of one data dir: taken by `acquire`, given up by `release` (or by the process's exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; AgentError (exit 2) when another agent holds it."""
        fd = os.open(self.data_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(f"another agent already runs with data dir {self.data_dir}", 2) from None
        self._fd = fd  # close-on-exec: an agent that re-execs itself takes the lock again

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
