"""Dynamic batching, as TensorFlow Serving does it: requests that arrive together share one model call.

Requests wait in an asyncio queue. A worker takes the first, waits at most `max_wait` seconds for more
(unless the queue already holds a full batch), takes what has come up to `max_batch_size` images, and runs
the model once on a thread of its own, so the event loop keeps accepting requests meanwhile. Model calls run
one at a time; while one runs, the next batch gathers. `stop()` answers every request queued before it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .payloads import BadRequest

_STOP = object()  # queued by stop(): the worker ends when it reaches it


@dataclass
class BatchStats:
    """Counts since start: requests answered, images predicted, model calls, the largest batch, and the
    seconds spent in model calls."""

    requests: int = 0
    predictions: int = 0
    model_calls: int = 0
    largest_batch: int = 0
    model_seconds: float = 0.0

    def as_dict(self) -> dict:
        mean = self.predictions / self.model_calls if self.model_calls else 0.0
        return {**asdict(self), "model_seconds": round(self.model_seconds, 3), "mean_batch": round(mean, 2)}


class Batcher:
    """Runs `predict` (images (N, ...) -> outputs (N, ...)) on batches of concurrent requests.

    `max_batch_size` 1 switches batching off: one model call per request (a request of several images is
    always one call). Use inside a running event loop, between `start()` and `stop()`; `on_batch` is told the size
    of every batch run.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 64,
                 max_wait: float = 0.002, on_batch: Callable[[int], None] = lambda size: None):
        self.predict_batch, self.max_batch_size, self.max_wait = predict, max_batch_size, max_wait
        self.on_batch, self.stats, self.stopping = on_batch, BatchStats(), False
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """Answer the requests queued so far, then stop."""
        self.stopping = True
        self._queue.put_nowait(_STOP)
        await asyncio.gather(self._worker, return_exceptions=True)
        self._thread.shutdown(wait=True)

    @property
    def queued(self) -> int:
        """Requests waiting for a model call."""
        return self._queue.qsize() if self._queue else 0

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The outputs for these images, computed in a batch with whatever other requests came with them."""
        if self.stopping:
            raise BadRequest("this model version has just been unloaded; send the request again", 503)
        answer = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((images, answer))
        return await answer

    async def _work(self) -> None:
        held = None  # a request that did not fit the last batch (or the stop): it starts the next one
        while True:
            first, held = (held if held is not None else await self._queue.get()), None
            if first is _STOP:
                return
            batch, size = [first], len(first[0])
            if size < self.max_batch_size and self.max_wait > 0 and self._queue.qsize() < self.max_batch_size - size:
                await asyncio.sleep(self.max_wait)
            while size < self.max_batch_size and not self._queue.empty():
                request = self._queue.get_nowait()
                if request is _STOP or size + len(request[0]) > self.max_batch_size:
                    held = request
                    break
                batch.append(request)
                size += len(request[0])
            await self._run(batch)

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        images = batch[0][0] if len(batch) == 1 else np.concatenate([images for images, _ in batch])
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._thread, self.predict_batch, images)
        except Exception as err:  # the model's failure is each waiting request's answer
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(err)
            return
        self.stats.requests += len(batch)
        self.stats.predictions += len(images)
        self.stats.model_calls += 1
        self.stats.model_seconds += time.perf_counter() - started
        self.stats.largest_batch = max(self.stats.largest_batch, len(images))
        self.on_batch(len(images))
        start = 0
        for request, answer in batch:
            if not answer.done():  # a client that went away cancels its answer
                answer.set_result(outputs[start:start + len(request)])
            start += len(request)
