"""Reading a runtime's log: its last lines, and its own account of why it failed.

Each start appends to `logs/<service>.<generation>.log` after a line holding `START_MARKER`, so the reason a
runtime gives is looked for only since its latest start.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

START_MARKER = "agent starts generation"  # in the line the supervisor writes to the log before each start
# The last line of a Python traceback: `RuntimeError: calibration table missing`, `json.decoder.JSONDecodeError: ...`.
_EXCEPTION_LINE = re.compile(
    r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Failure|Fault)(?::\s.*)?"
)
ERROR_LINE_CHARS = 300


def error_line(log_lines: list[str]) -> str:
    """The runtime's own account of why it failed: the last exception line of its latest start
    (`RuntimeError: calibration table missing`), else its last `error: ...` line; "" when it gave none."""
    since_start = log_lines
    for i in range(len(log_lines) - 1, -1, -1):
        if log_lines[i].startswith("---") and START_MARKER in log_lines[i]:
            since_start = log_lines[i + 1 :]
            break
    found = ""
    for line in reversed(since_start):
        text = line.strip()
        if _EXCEPTION_LINE.fullmatch(text):
            found = text
            break
        if not found and text.startswith("error: "):
            found = text.removeprefix("error: ")
    return found[:ERROR_LINE_CHARS]


def failure(what: str, log_lines: list[str]) -> str:
    """`what` went wrong, followed by the runtime's own error line when its log has one."""
    line = error_line(log_lines)
    return f"{what}: {line}" if line else what


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last `lines` lines of a log file ([] when there is none)."""
    try:
        with open(path, errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []
