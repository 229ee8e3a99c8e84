"""Long work for the app: a :class:`Job` runs in a worker thread, reports its progress
(steps done of a total, the step's name) and can be cancelled between steps; each job
keeps its own result, so two tabs working at once never see each other's."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

#: a job's states; the last three are final
STATES = ("running", "done", "failed", "cancelled")


class Cancelled(Exception):
    """Raised inside a job's work when the job was cancelled (at its next step)."""


@dataclass
class Job:
    id: str
    kind: str
    total: int
    done: int = 0
    step: str = ""
    state: str = "running"
    error: str = ""
    result: object = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def advance(self, step: str) -> None:
        """Start the next step (named ``step``); raises :class:`Cancelled` when cancelled."""
        if self._cancel.is_set():
            raise Cancelled()
        self.step = step

    def finish_step(self) -> None:
        self.done += 1

    def cancel(self) -> None:
        self._cancel.set()

    def status(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "step": self.step, "error": self.error, "seconds": round(self.seconds, 4)}


class Jobs:
    """The app's jobs, by id, run on ``workers`` threads; at most ``keep`` finished jobs
    are kept (the oldest are forgotten first)."""

    def __init__(self, workers: int = 2, keep: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="torchexplain-app")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.keep = keep

    def submit(self, kind: str, total: int, work: Callable[[Job], object]) -> Job:
        job = Job(uuid.uuid4().hex, kind, total)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._pool.submit(self._run, job, work)
        return job

    @staticmethod
    def _run(job: Job, work) -> None:
        try:
            job.result = work(job)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as err:  # noqa: BLE001  (shown to the user as one line)
            text = str(err).splitlines()[0] if str(err) else ""
            job.error = f"{type(err).__name__}: {text}" if text else type(err).__name__
            job.state = "failed"
        finally:
            job.seconds = time.perf_counter() - job.started

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
