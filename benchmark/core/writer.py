"""A background writer: the model keeps computing while finished maps are copied to the host and stored.

``with BackgroundWriter() as w: w.submit(fn, *args)`` runs ``fn(*args)`` on one worker thread, in submission order.
At most ``depth`` jobs wait (``submit`` blocks beyond that, so device memory held by queued maps stays bounded).
An exception in a job is raised again in the submitting thread by the next ``submit`` or on leaving the block.
Leaving the block, normally or by an exception (a KeyboardInterrupt included), first runs every job already
submitted: what was computed is stored before the run stops.

On CUDA the device-to-host copy of the maps is part of the job, so the submitting thread never waits for the GPU
(the copy is queued on the device behind the work that produced the maps and the worker thread waits for it).
"""

from __future__ import annotations

import queue
import threading

_STOP = object()


class BackgroundWriter:
    def __init__(self, depth: int = 2, enabled: bool = True):
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.enabled = enabled
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "BackgroundWriter":
        if self.enabled:
            self._thread = threading.Thread(target=self._work, name="map-writer", daemon=True)
            self._thread.start()
        return self

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:  # after a failure the remaining jobs are dropped, the error is reported
                    fn, args = job
                    try:
                        fn(*args)
                    except BaseException as err:  # noqa: BLE001 - handed to the submitting thread
                        self._error = err
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn, *args) -> None:
        """Run ``fn(*args)`` in the background (in the calling thread when disabled)."""
        self._raise()
        if self._thread is None:
            fn(*args)
            return
        self._queue.put((fn, args))

    def wait(self) -> None:
        """Block until every job submitted so far has run (the worker stays up); raise a job error, if any."""
        if self._thread is not None:
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Run every submitted job, stop the worker and raise the first job error, if any."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._raise()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # leaving on an error: still store what was computed; the original error wins
            self.close()
        except BaseException:  # noqa: BLE001
            pass
