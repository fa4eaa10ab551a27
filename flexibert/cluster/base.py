"""Where candidate jobs run: in the controller's process, as subprocesses on this machine, or on SLURM.

Every executor has the same small interface, so the controller never knows which one it drives:
``submit`` starts a job and returns an id that is written to the journal, ``poll`` reports the
states of a set of ids (also ids from an earlier, killed controller: jobs are adopted, never
resubmitted), ``find`` looks a job up by the token it was launched with (a controller killed between
launching a job and journaling its id leaves only the token), ``cancel`` stops jobs, ``pause`` waits
before the next poll. Whether a job succeeded
is decided by the controller from ``results.json``, which the job writes last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TOKEN_VARIABLE = "FLEXIBERT_JOB_TOKEN"
PENDING, RUNNING, ENDED, FAILED, LOST = "pending", "running", "ended", "failed", "lost"


@dataclass(frozen=True)
class JobRequest:
    """What one submission runs: a candidate's job, attempt ``attempt``, logging to ``log``."""

    run_dir: Path
    model_hash: str
    attempt: int
    neighbor: str | None
    log: Path
    token: str

    def command(self, python: str = sys.executable) -> list[str]:
        command = [python, "-m", "flexibert.candidate_job", "--run_dir", str(self.run_dir), "--model_hash", self.model_hash,
                   "--attempt", str(self.attempt)]
        return command + (["--neighbor", self.neighbor] if self.neighbor else [])


@dataclass(frozen=True)
class JobStatus:
    """``state`` is one of pending/running (still going), ended (look for results.json), failed or lost; ``detail`` says why."""

    state: str
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state in (PENDING, RUNNING)


class Executor(Protocol):
    name: str

    cancel_on_stop: bool

    def submit(self, request: JobRequest) -> str: ...
    def find(self, token: str) -> str | None: ...
    def poll(self, job_ids: list[str]) -> dict[str, JobStatus]: ...
    def cancel(self, job_ids: list[str]) -> None: ...
    def pause(self) -> None: ...


class InlineExecutor:
    """Runs each job to the end inside ``submit`` (one at a time): for benchmark files, tests and debugging."""

    name = "inline"
    cancel_on_stop = False

    def __init__(self, job: Callable[[JobRequest], object]) -> None:
        self.job = job
        self._status: dict[str, JobStatus] = {}

    def submit(self, request: JobRequest) -> str:
        job_id = f"inline-{request.model_hash[:12]}-{request.attempt}-{time.time_ns()}"
        request.log.parent.mkdir(parents=True, exist_ok=True)
        with open(request.log, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                self.job(request)
                self._status[job_id] = JobStatus(ENDED)
            except (Exception, SystemExit) as err:  # the job failed; the controller retries it, so record why
                traceback.print_exc(file=log)
                self._status[job_id] = JobStatus(FAILED, f"{type(err).__name__}: {err}")
        return job_id

    def find(self, token: str) -> str | None:
        """Inline jobs die with their controller, so an earlier controller's job is never running."""
        return None

    def poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        # An id from an earlier controller process: that process (and the job in it) is gone.
        return {job_id: self._status.get(job_id, JobStatus(LOST, "the controller that ran it inline stopped")) for job_id in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        """Nothing to stop: inline jobs have finished by the time submit returns."""

    def pause(self) -> None:
        """Never needed: every job has ended when the controller polls."""


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), None if it is gone or a zombie; guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


class LocalExecutor:
    """Each job is a subprocess in its own session on this machine; jobs survive a killed controller and are adopted by the next.

    Job ids are ``<pid>:<start time>``. ``threads`` sets OMP_NUM_THREADS/MKL_NUM_THREADS of each job
    so that concurrent jobs do not oversubscribe the cores.
    """

    name = "local"
    cancel_on_stop = True  # Ctrl-C should not leave training processes behind on a laptop

    def __init__(self, threads: int | None = None, poll_interval: float = 2.0, python: str = sys.executable):
        self.threads, self.poll_interval, self.python = threads, poll_interval, python
        self._children: dict[str, subprocess.Popen] = {}

    def submit(self, request: JobRequest) -> str:
        request.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, TOKEN_VARIABLE: request.token}
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        with open(request.log, "ab") as log:
            process = subprocess.Popen(request.command(self.python), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        job_id = f"{process.pid}:{_process_start_time(process.pid) or 'gone'}"
        self._children[job_id] = process
        return job_id

    def find(self, token: str) -> str | None:
        """The job launched with ``token`` (its environment holds it), if its process is still alive."""
        needle = f"{TOKEN_VARIABLE}={token}\0".encode()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                found = needle in environ.read_bytes()
            except OSError:  # the process ended while we looked, or is not ours
                continue
            if not found:
                continue
            try:
                leader = os.getpgid(int(environ.parent.name))  # the job's own process, not a worker it started
            except ProcessLookupError:
                continue
            if (started := _process_start_time(leader)) is not None:
                return f"{leader}:{started}"
        return None

    def _status(self, job_id: str) -> JobStatus:
        child = self._children.get(job_id)
        if child is not None:
            code = child.poll()
            if code is None:
                return JobStatus(RUNNING)
            return JobStatus(ENDED, f"exit code {code}")
        pid, _, started = job_id.partition(":")
        if started != "gone" and _process_start_time(int(pid)) == started:
            return JobStatus(RUNNING, "adopted from an earlier controller")
        return JobStatus(ENDED, "process gone (started by an earlier controller)")

    def poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            if self._status(job_id).active:
                with contextlib.suppress(ProcessLookupError):  # it ended between the check and the kill: nothing to stop
                    os.killpg(int(job_id.split(":")[0]), signal.SIGTERM)
        for job_id in job_ids:
            child = self._children.get(job_id)
            if child is not None:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()

    def pause(self) -> None:
        time.sleep(self.poll_interval)
