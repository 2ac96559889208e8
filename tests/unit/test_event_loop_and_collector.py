"""The event loop the agent, fleet and hub run on (uvloop unless told otherwise) and the hub's collector settings."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from agent import event_loop
from hub import collector
from simulators.fleet import settle_collector


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert issubclass(event_loop.run(_loop_type()), uvloop.Loop)
    monkeypatch.setenv(event_loop.ENV, "asyncio")
    kind = event_loop.run(_loop_type())
    assert not issubclass(kind, uvloop.Loop) and issubclass(kind, asyncio.BaseEventLoop)


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert event_loop.loop_factory() is asyncio.new_event_loop


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


def test_a_fleet_process_settles_its_collector_like_the_hub() -> None:
    before = gc.get_threshold()
    try:
        agents = [[] for _ in range(1000)]
        settle_collector()
        assert gc.get_freeze_count() >= len(agents)
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, collector.MIDDLE_THRESHOLD, collector.OLD_THRESHOLD)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
