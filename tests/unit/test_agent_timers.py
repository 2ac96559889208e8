"""Periodic timers with slack: deadlines on a common grain, so many agents' timers share a loop turn."""

from __future__ import annotations

import asyncio
import random

from agent import timers


def test_deadlines_are_rounded_up_to_the_grain() -> None:
    loop = asyncio.new_event_loop()
    try:
        for delay in (0.0, 0.01, 0.3, 2.0, 15.0):
            now = loop.time()
            when = timers.deadline(loop, delay)
            assert now + delay <= when < loop.time() + delay + timers.GRAIN_S
            assert abs(when / timers.GRAIN_S - round(when / timers.GRAIN_S)) < 1e-9
    finally:
        loop.close()


def test_timers_of_many_agents_fire_in_a_few_loop_turns() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        handles = [  # 200 agents' 2-s ticks, spread over one second as they would be
            timers.call_later(loop, 0.2 + random.random(), lambda: fired.append(1)) for _ in range(200)
        ]
        await asyncio.sleep(1.2 + timers.GRAIN_S)
        return len({h.when() for h in handles}), len(fired)

    distinct, total = asyncio.run(main())
    assert total == 200  # every one fired, none early or lost
    assert distinct <= 1.0 / timers.GRAIN_S + 1  # one deadline per grain, not one wake-up per timer
