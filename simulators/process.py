"""Settings of a process that holds thousands of agents: its open-files limit and its garbage collector.

A fleet process keeps, per agent, a socket and a few SQLite files open, and hundreds of thousands
of long-lived objects (daemons, links, states). During a deploy perf put ~10% of a fleet process's
CPU in CPython's cyclic collector, most of it young collections every 700 allocations; the objects
alive once the agents started are moved out of its sight, and its runs spaced out, as the hub does
with its own (these few lines are repeated rather than shared: the hub is another program).
"""

from __future__ import annotations

import gc
import resource

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython: 700)
MIDDLE_THRESHOLD = 20  # young collections per middle one (CPython: 10)
OLD_THRESHOLD = 10  # middle collections per full one, still subject to CPython's 25%-growth rule


def settle_collector() -> None:
    """Collect once, freeze what survives (the started agents), and space collections out."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def raise_fd_limit() -> int:
    """Lift this process's soft open-files limit to the hard limit (each agent holds a socket + SQLite files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
