"""The hub's event loops: uvloop's where installed (the loop's own work in C, several times cheaper).

The hub's main loop and its MQTT bridge's loop thread run on it; `EDGEPORT_EVENT_LOOP=asyncio`
picks asyncio's own loop (to rule the loop out when chasing a bug). The agent has its own copy
of these few lines: hub and agent are separate programs and share only the protocol.
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
    if os.environ.get(ENV, "uvloop").strip().lower() != "asyncio":
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
