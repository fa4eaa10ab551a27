"""The local executor (the default): each job is a subprocess on this machine, in a session of its own.

Jobs survive a killed controller and are adopted by the next one: a job's id is ``<pid>:<start
time>`` (the start time guards against a reused pid), and a job whose id was never journaled is found
by the token in its environment (/proc/<pid>/environ). Ctrl-C of the controller stops the jobs too
(SIGTERM to each job's process group, SIGKILL after 30 s), so that no training is left behind on a
laptop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from flexibert.cluster.base import ENDED, RUNNING, TOKEN_VARIABLE, Executor, JobRequest, JobStatus
from flexibert.utils.cli import setting

CANCEL_WAIT_S = 30  # how long a cancelled job may take to save and exit before it is killed


@dataclass(frozen=True)
class LocalSettings:
    """What each local job gets (the ``--job_*`` flags)."""

    threads: int | None = setting(None, "CPU threads per local job (default: cores / --max_concurrent)")


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), None if it is gone or a zombie; guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


class LocalExecutor(Executor):
    """Each job is a subprocess in its own session on this machine; jobs survive a killed controller and are adopted by the next.

    ``settings.threads`` sets OMP_NUM_THREADS/MKL_NUM_THREADS of each job so that concurrent jobs do
    not oversubscribe the cores.
    """

    name = "local"
    where = "as subprocesses on this machine"
    Settings = LocalSettings
    flags_prefix = "job_"
    cancel_on_stop = True  # Ctrl-C should not leave training processes behind on a laptop

    def __init__(self, settings: LocalSettings | None = None, poll_interval: float = 2.0, python: str = sys.executable):
        super().__init__(poll_interval)
        self.threads, self.python = (settings or LocalSettings()).threads, python
        self._children: dict[str, subprocess.Popen] = {}

    @classmethod
    def complete_settings(cls, settings: LocalSettings, args: argparse.Namespace) -> LocalSettings:
        """Without --job_threads, the cores are shared out among the --max_concurrent jobs."""
        return dataclasses.replace(settings, threads=settings.threads or max(1, (os.cpu_count() or 1) // args.max_concurrent))

    def _submit(self, request: JobRequest) -> str:
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

    def _poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        """SIGTERM to each running job's process group (the job saves and exits); SIGKILL to a child that outlasts CANCEL_WAIT_S."""
        for job_id in job_ids:
            if self._status(job_id).active:
                with contextlib.suppress(ProcessLookupError):  # it ended between the check and the kill: nothing to stop
                    os.killpg(int(job_id.split(":")[0]), signal.SIGTERM)
        for job_id in job_ids:
            child = self._children.get(job_id)
            if child is not None:
                try:
                    child.wait(timeout=CANCEL_WAIT_S)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
