"""The event loop the agent and the fleet simulator run on: uvloop's where installed.

uvloop (libuv, in C) does the loop's own work (callbacks, timers, socket transports) several
times cheaper than asyncio's pure-Python selector loop. That work is much of an idle agent's
CPU, and most of a simulated fleet's, where a thousand agents share one loop. It is already
installed with uvicorn[standard]; `EDGEPORT_EVENT_LOOP=asyncio` picks asyncio's own loop (to
rule the loop out when chasing a bug). The hub has its own copy of these lines (hub/event_loop.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "EDGEPORT_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop: uvloop's, unless it is missing or $EDGEPORT_EVENT_LOOP says asyncio."""
    choice = os.environ.get(ENV, "uvloop").strip().lower()
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:  # asyncio's loop does the same, with more CPU
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` makes."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
