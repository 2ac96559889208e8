"""Dynamic batching: queue requests, concatenate along axis 0, run once, split the results.

A batch closes when it holds `max_batch_size` rows or `max_delay_s` after its first request,
whichever comes first. Requests whose inputs differ in names, dtypes or trailing dimensions (or
that ask for different outputs) are run in separate batches. When a merged call fails, or returns
an output without a per-row first axis, its requests are rerun one by one, so a bad request fails
alone and outputs are never split wrongly.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from runtimes.backends.base import TensorBackend
from runtimes.metrics import Metrics

_Item = tuple[dict[str, np.ndarray], list[str] | None, int, "asyncio.Future[dict[str, np.ndarray]]"]


def _signature(inputs: dict[str, np.ndarray], outputs: list[str] | None) -> tuple[Any, ...]:
    return (tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())), tuple(outputs or ()))


class Batcher:
    """Collects concurrent requests into model calls of up to `max_batch_size` rows."""

    def __init__(
        self, backend: TensorBackend, max_batch_size: int, max_delay_s: float, executor: Executor, metrics: Metrics
    ) -> None:
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.executor = executor
        self.metrics = metrics
        self._pending: list[_Item] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one request; the future resolves to its own rows of the outputs."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        rows = next(iter(inputs.values())).shape[0] if inputs and next(iter(inputs.values())).ndim else 1
        self._pending.append((inputs, outputs, rows, fut))
        self._rows += rows
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s, self._flush)
        return fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._pending, self._rows = self._pending, [], 0
        groups: dict[tuple[Any, ...], list[_Item]] = {}
        for item in items:
            groups.setdefault(_signature(item[0], item[1]), []).append(item)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            task = loop.create_task(self._run(group))
            self._running.add(task)  # keep a reference until done (the loop holds tasks weakly)
            task.add_done_callback(self._running.discard)

    async def _run(self, group: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        names = list(group[0][0])
        total = sum(item[2] for item in group)
        try:
            if len(group) == 1:
                batch = group[0][0]
            else:
                batch = {n: np.concatenate([item[0][n] for item in group], axis=0) for n in names}
            started = time.perf_counter()
            result = await loop.run_in_executor(self.executor, self.backend.predict, batch, group[0][1])
            self.metrics.model_time.observe(time.perf_counter() - started)
        except Exception as exc:
            if len(group) > 1:  # one request's data may be the cause: only that caller should fail
                await self._run_each(group)
                return
            _fail(group, exc)
            return
        if len(group) > 1 and any(v.ndim == 0 or v.shape[0] != total for v in result.values()):
            # Some output is not per-row (no batch axis): it cannot be split, so run one by one.
            await self._run_each(group)
            return
        self.metrics.batch_size.observe(total)
        start = 0
        for _, _, rows, fut in group:
            if not fut.done():
                fut.set_result({k: v[start : start + rows] for k, v in result.items()})
            start += rows

    async def _run_each(self, group: list[_Item]) -> None:
        for item in group:
            await self._run([item])


def _fail(group: list[_Item], exc: BaseException) -> None:
    for item in group:
        if not item[3].done():
            item[3].set_exception(exc)
