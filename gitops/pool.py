"""Running the independent steps of one apply side by side: a bounded pool, and how it is cancelled.

Python delivers signals to the main thread only: Ctrl-C and SIGTERM (which the CLI and the
daemon's worker turn into KeyboardInterrupt) land there, never in a worker. So the main thread
only waits. When it is interrupted it sets the run's ``Cancel`` and waits again; every worker
raises KeyboardInterrupt at its next checkpoint (``Cancel.check``), which sends it down the
engine's usual cancel path (record CANCELLED, old container restored); steps that had not
started never start. Only when every worker has finished does ``run`` return, so no record is
left BUILDING and no swap half-done by a worker that outlived the command.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from gitops import interrupt

T = TypeVar("T")

#: How often a worker waiting on a silent build looks at its Cancel (seconds).
_POLL = 0.05


class Cancel:
    """One run's cancel flag: set by the main thread, checked by the workers.

    It is also set when the process was interrupted (``gitops.interrupt``) but the main thread never
    saw its KeyboardInterrupt: Python drops one that lands in a ``__del__``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask every worker to stop at its next checkpoint."""
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set() or interrupt.requested()

    def check(self) -> None:
        """A checkpoint: KeyboardInterrupt when the run was cancelled, as Ctrl-C would raise on the main thread."""
        if self.is_set:
            raise KeyboardInterrupt

    def call(self, work: Callable[[], T], abandoned: Callable[[T], Any] | None = None) -> T:
        """``work()``, in a helper thread that this one can walk away from when the run is cancelled.

        For calls that may block without a checkpoint for long (a build step that prints nothing
        while the Docker API stream stays silent): this thread polls the flag and raises
        KeyboardInterrupt as soon as it is set. The helper is a daemon thread: it stops at its own
        next checkpoint, or when the process exits and Docker, seeing the connection close,
        cancels the build. If ``work`` still finishes after being abandoned, ``abandoned`` gets
        its result (the engine removes the image no record will own).
        """
        done = threading.Event()
        box: dict[str, Any] = {}
        lock = threading.Lock()

        def run() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            with lock:
                done.set()
                left = box.get("left", False)
            if left and "value" in box and abandoned is not None:
                try:
                    abandoned(box["value"])
                except Exception:  # noqa: BLE001 - best effort, nobody is left to tell
                    pass

        threading.Thread(target=run, name="kalpana-call", daemon=True).start()
        while not done.wait(_POLL):
            with lock:
                if self.is_set and not done.is_set():
                    box["left"] = True
                    raise KeyboardInterrupt
        if "error" in box:
            raise box["error"]
        return box["value"]


@dataclass
class Done(Generic[T]):
    """How one task ended: its value, or what it raised; ``started`` False when a cancel came first."""

    value: T | None = None
    error: BaseException | None = None
    started: bool = True


def run(tasks: list[Callable[[], T]], size: int, cancel: Cancel) -> list[Done[T]]:
    """Run ``tasks`` on at most ``size`` threads; one Done per task, in the order given.

    A task that raises does not stop the others. Ctrl-C (or SIGTERM) while waiting sets
    ``cancel`` and waits for the tasks that started; a second one is not caught, so an
    operator can still leave at once (the next run's recovery then repairs what was left).
    """
    def started(task: Callable[[], T]) -> Callable[[], Done[T]]:
        def go() -> Done[T]:
            if cancel.is_set:
                return Done(started=False)
            try:
                return Done(task())
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread with the others
                return Done(error=exc)
        return go

    pool = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="kalpana-step")
    futures: list[Future[Done[T]]] = [pool.submit(started(task)) for task in tasks]
    try:
        wait(futures)
    except KeyboardInterrupt:
        cancel.set()
        for future in futures:
            future.cancel()
        wait(futures)
    finally:
        pool.shutdown(wait=False)
    return [Done(started=False) if f.cancelled() else f.result() for f in futures]
