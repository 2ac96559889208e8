"""The event loops the agent, fleet and hub run on (uvloop unless told otherwise) and the collector settings of
the hub and of a fleet process."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import uvloop

from agent import event_loop
from hub import collector
from hub import event_loop as hub_event_loop
from simulators import process


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("loops", [event_loop, hub_event_loop], ids=["agent", "hub"])
def test_uvloop_by_default_and_asyncio_on_request(loops: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loops.ENV, raising=False)
    assert issubclass(loops.run(_loop_type()), uvloop.Loop)
    monkeypatch.setenv(loops.ENV, "asyncio")
    kind = loops.run(_loop_type())
    assert not issubclass(kind, uvloop.Loop) and issubclass(kind, asyncio.BaseEventLoop)


@pytest.mark.parametrize("loops", [event_loop, hub_event_loop], ids=["agent", "hub"])
def test_asyncio_when_uvloop_is_missing(loops: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loops.ENV, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert loops.loop_factory() is asyncio.new_event_loop


def test_settle_freezes_startup_objects_and_spaces_collections_out() -> None:
    before = gc.get_threshold()
    try:
        startup = [[] for _ in range(1000)]  # container objects alive at "startup"
        collector.settle()
        assert gc.get_freeze_count() >= len(startup)
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, collector.MIDDLE_THRESHOLD, collector.OLD_THRESHOLD)
    finally:  # the rest of the test session keeps CPython's defaults
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_fleet_process_freezes_its_agents_and_spaces_collections_out() -> None:
    before = gc.get_threshold()
    try:
        agents = [[] for _ in range(1000)]
        process.settle_collector()
        assert gc.get_freeze_count() >= len(agents)
        assert gc.get_threshold() == (process.YOUNG_THRESHOLD, process.MIDDLE_THRESHOLD, process.OLD_THRESHOLD)
        assert gc.get_threshold() > (700, 10, 10)  # CPython's defaults
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
