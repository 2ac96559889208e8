"""Periodic timers with slack: deadlines rounded up to a common grain, so the timers of many agents
sharing one event loop fire in the same loop turn.

A fleet process runs a thousand agents on one loop, each with a reconciler resync timer, a
telemetry round every minute, heartbeats and an MQTT keep-alive. Left at their exact times those
timers are spread evenly, and the loop woke up for nearly every one of them (an epoll wait, a
turn of the loop and a thread wake-up each). Rounded up to a quarter second they fire in batches.
For a single agent the only effect is a period up to GRAIN_S longer. The first wait of a periodic
report is a random share of its interval (`random_phase`), so agents started together do not report in step.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

GRAIN_S = 0.25


def deadline(loop: asyncio.AbstractEventLoop, delay: float) -> float:
    """The loop time `delay` seconds from now, rounded up to a multiple of GRAIN_S."""
    return math.ceil((loop.time() + delay) / GRAIN_S) * GRAIN_S


def call_later(loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
    """`loop.call_later` with slack (see module docstring)."""
    return loop.call_at(deadline(loop, delay), callback)


async def sleep(delay: float) -> None:
    """`asyncio.sleep` with slack (see module docstring)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, deadline(loop, delay) - loop.time()))


def random_phase() -> float:
    """The first wait of a periodic report, as a share of its interval: drawn from [0, 1).

    Agents that start or reconnect together (a site powering up, a fleet back after a hub restart) would
    otherwise send their heartbeats and telemetry rounds in step for as long as they run: 10,000 at once
    every interval instead of a steady stream.
    """
    return random.random()
