"""Printing results: human tables (default) or JSON (`--output json`) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_json(data: Any) -> None:
    """Indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Left-aligned columns separated by two spaces; '(none)' when empty."""
    if not rows:
        sys.stdout.write("(none)\n")
        return
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    """`key: value` lines, keys aligned."""
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        sys.stdout.write(f"{key + ':':<{width + 1}} {value}\n")


def human_size(n: int) -> str:
    """Bytes as B / KB / MB / GB (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def labels(d: dict[str, str]) -> str:
    """`k=v,k2=v2` for a table cell."""
    return ",".join(f"{k}={v}" for k, v in d.items())


class ProgressLine:
    """Progress of long transfers on stderr: rewritten in place on a terminal, every 25% otherwise."""

    MIN_BYTES = 8 * 1024 * 1024  # small files finish too quickly to be worth a line

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self._last: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        """Report `done` of `total` bytes of `label`."""
        if total < self.MIN_BYTES:
            return
        pct = int(done * 100 / total) if total else 100
        if sys.stderr.isatty():
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\r{self.verb} {label}: {pct:3d}% of {human_size(total)}{end}")
        elif pct // 25 != self._last.get(label, -1):
            self._last[label] = pct // 25
            sys.stderr.write(f"{self.verb} {label}: {pct}% of {human_size(total)}\n")
        sys.stderr.flush()
