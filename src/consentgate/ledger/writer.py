"""Group commit: one thread writes; the batches that wait while it commits go
together into the next transaction (one fsync for all of them), each still all or
nothing and answered as if alone. If a transaction fails because of one batch (a
reused id with other content, a reused idempotency key), the group is written again
in halves, down to single batches where needed, so only the bad one is refused."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from consentgate.domain.errors import InputError, StorageError
from consentgate.domain.events import ValidEvent
from consentgate.ledger.batch import BatchResult, Once

__all__ = ["GroupWriter"]

Request = tuple[Sequence[ValidEvent], Once | None]
AppendMany = Callable[[Sequence[Request]], list[BatchResult]]
_STOP = None


class GroupWriter:
    def __init__(self, append: AppendMany, *, max_group: int = 64) -> None:
        self._append = append
        self._max = max_group
        self._queue: queue.Queue[tuple[Request, Future[BatchResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="consentgate-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, valid: Sequence[ValidEvent], once: Once | None) -> BatchResult:
        """Queue a batch and wait until it is committed (or refused)."""
        if self._closed:
            raise StorageError("the ledger's writer is closed")
        done: Future[BatchResult] = Future()
        self._queue.put(((valid, once), done))
        return done.result()

    def close(self) -> None:
        """Write what is queued, then stop."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < self._max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            self._write(group)
            if stop:
                return

    def _write(self, group: list[tuple[Request, Future[BatchResult]]]) -> None:
        try:
            results = self._append([request for request, _ in group])
        except InputError as err:
            if len(group) == 1:
                group[0][1].set_exception(err)
                return
            # Find the bad batches by halves: a bad one costs about 2 log2(n)
            # transactions, not n, so a client sending them cannot stall the others.
            half = len(group) // 2
            self._write(group[:half])
            self._write(group[half:])
            return
        except BaseException as err:  # the database failed: every waiting batch hears
            for _, done in group:
                done.set_exception(err)
            return
        for (_, done), result in zip(group, results, strict=True):
            done.set_result(result)
