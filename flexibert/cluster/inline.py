"""The inline executor: each job runs to the end inside ``submit``, in the controller's own process.

For benchmark files (a job only looks its score up), tests and debugging. The job function is handed
in by the caller (flexibert.search.job.run_request), so this package does not import the search.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from flexibert.cluster.base import ENDED, FAILED, LOST, Executor, JobRequest, JobStatus


class InlineExecutor(Executor):
    """Runs each job to the end inside ``submit`` (one at a time), its output redirected to the job's log."""

    name = "inline"
    where = "in this process"
    cancel_on_stop = False

    def __init__(self, job: Callable[[JobRequest], object]) -> None:
        super().__init__()
        self.job = job

    @classmethod
    def create(cls, settings: Any, args: argparse.Namespace, job: Callable[[JobRequest], object] | None) -> InlineExecutor:
        if job is None:
            raise TypeError("the inline executor needs the job function to run requests with")
        return cls(job)

    def _submit(self, request: JobRequest) -> str:
        job_id = f"inline-{request.model_hash[:12]}-{request.attempt}-{time.time_ns()}"
        with open(request.log, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                self.job(request)
                self._last[job_id] = JobStatus(ENDED)
            except (Exception, SystemExit) as err:  # the job failed (or exited); the controller retries it, so record why
                traceback.print_exc(file=log)
                self._last[job_id] = JobStatus(FAILED, f"{type(err).__name__}: {err}")
        return job_id

    def _poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        # An id from an earlier controller process: that process (and the job in it) is gone.
        return {job_id: self._last.get(job_id, JobStatus(LOST, "the controller that ran it inline stopped")) for job_id in job_ids}

    def find(self, token: str) -> str | None:
        """Inline jobs die with their controller, so an earlier controller's job is never running."""
        return None

    def cancel(self, job_ids: list[str]) -> None:
        """Nothing to stop: inline jobs have finished by the time submit returns."""

    def pause(self) -> None:
        """Never needed: every job has ended when the controller polls."""
