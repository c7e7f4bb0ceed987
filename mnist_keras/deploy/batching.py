"""Dynamic batching, as TensorFlow Serving does it: requests that arrive together share one model call.

Requests wait in a queue that a model thread of their own reads: it takes the first, waits at most `max_wait`
seconds for more (unless a full batch is already there), takes what has come up to `max_batch_size` images,
runs the model once and hands each request its answer on the event loop, which keeps accepting requests
meanwhile. The thread goes straight on to the next batch, without waiting for the event loop: model calls run
one at a time, back to back. `stop()` answers every request queued before it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .payloads import BadRequest

_STOP = object()  # queued by stop(): the model thread ends when it reaches it


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
    of every batch run (on the model thread).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 64,
                 max_wait: float = 0.002, on_batch: Callable[[int], None] = lambda size: None):
        self.predict_batch, self.max_batch_size, self.max_wait = predict, max_batch_size, max_wait
        self.on_batch, self.stats, self.stopping = on_batch, BatchStats(), False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._work, name="model", daemon=True)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def stop(self) -> None:
        """Answer the requests queued so far, then stop."""
        self.stopping = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    @property
    def queued(self) -> int:
        """Requests waiting for a model call."""
        return self._queue.qsize()

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """The outputs for these images, computed in a batch with whatever other requests came with them."""
        if self.stopping:
            raise BadRequest("this model version has just been unloaded; send the request again", 503)
        answer = self._loop.create_future()
        self._queue.put((images, answer))
        return await answer

    def _work(self) -> None:
        """The model thread: batch after batch until the stop."""
        held = None  # a request that did not fit the last batch (or the stop): it starts the next one
        while True:
            first, held = (held if held is not None else self._queue.get()), None
            if first is _STOP:
                return
            batch, size = [first], len(first[0])
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch_size:
                try:
                    request = self._queue.get(timeout=max(deadline - time.perf_counter(), 0)) \
                        if self.max_wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is _STOP or size + len(request[0]) > self.max_batch_size:
                    held = request
                    break
                batch.append(request)
                size += len(request[0])
            self._run(batch)

    def _run(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        images = batch[0][0] if len(batch) == 1 else np.concatenate([images for images, _ in batch])
        started = time.perf_counter()
        try:
            outputs = self.predict_batch(images)
        except Exception as err:  # the model's failure is each waiting request's answer
            self._loop.call_soon_threadsafe(_fail, batch, err)
            return
        self.stats.requests += len(batch)
        self.stats.predictions += len(images)
        self.stats.model_calls += 1
        self.stats.model_seconds += time.perf_counter() - started
        self.stats.largest_batch = max(self.stats.largest_batch, len(images))
        self.on_batch(len(images))
        self._loop.call_soon_threadsafe(_answer, batch, outputs)


def _answer(batch: list[tuple[np.ndarray, asyncio.Future]], outputs: np.ndarray) -> None:
    """Each request's rows of the outputs (on the event loop)."""
    start = 0
    for images, answer in batch:
        if not answer.done():  # a client that went away cancels its answer
            answer.set_result(outputs[start:start + len(images)])
        start += len(images)


def _fail(batch: list[tuple[np.ndarray, asyncio.Future]], err: Exception) -> None:
    for _, answer in batch:
        if not answer.done():
            answer.set_exception(err)
