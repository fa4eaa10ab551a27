"""What every executor is: the job request, the job states, and the base class that keeps the books.

Every executor has the same small interface, so the controller never knows which one it drives:
``submit`` starts a job and returns an id that is written to the journal, ``poll`` reports the
states of a set of ids (also ids from an earlier, killed controller: jobs are adopted, never
resubmitted), ``find`` looks a job up by the token it was launched with (a controller killed between
launching a job and journaling its id leaves only the token), ``cancel`` stops jobs, ``pause`` waits
before the next poll. Whether a job succeeded is decided by the controller from ``results.json``,
which the job writes last.

A new executor is one subclass of :class:`Executor` in one module of this package (imported by its
``__init__``): a ``name`` (which registers it, so ``--executor NAME`` finds it), ``where`` its jobs
run (for ``--executor``'s help), the hooks ``_submit``, ``_poll``, ``find`` and ``cancel``, and, if it
has settings, a ``Settings`` dataclass whose fields become its flags (see flexibert/utils/cli.py).
``inline.py`` is the smallest one.
"""

from __future__ import annotations

import argparse
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flexibert.utils.cli import add_flags, from_flags, setting

TOKEN_VARIABLE = "FLEXIBERT_JOB_TOKEN"
PENDING, RUNNING, ENDED, FAILED, LOST = "pending", "running", "ended", "failed", "lost"

EXECUTORS: dict[str, type[Executor]] = {}  # name -> class, in registration order (the order of --executor's choices)


class ExecutorError(RuntimeError):
    """The executor cannot be used as asked (a setting, a missing tool, a refused job); the message says what to do.

    Jobs already submitted keep running; re-running the search adopts them.
    """


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
        """The job's command line, for executors that start it as a process."""
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


@dataclass(frozen=True)
class PollSettings:
    """How often the controller asks an executor about its running jobs (all but the inline one, whose jobs end in submit)."""

    poll_interval: float = setting(5.0, "seconds between status checks of running jobs")


class Executor(ABC):
    """Where candidate jobs run; a subclass with a ``name`` is an ``--executor`` choice.

    The base class keeps what every executor shares: the registry (EXECUTORS), the flags and their
    reading (:meth:`add_arguments`, :meth:`from_args`), the log folder each job appends to, the last
    state seen of each job (``_last``) and the pause between polls. A back end implements:

    - ``_submit(request)``: start the job (its log folder exists) and return its id;
    - ``_poll(job_ids)``: the state of every id, also of ids an earlier controller journaled;
    - ``find(token)``: the id of a job started with ``token`` that is still known, else None;
    - ``cancel(job_ids)``: stop those jobs.

    One with settings sets ``Settings`` (a dataclass of :func:`flexibert.utils.cli.setting` fields),
    ``flags_prefix`` and ``flags_title`` (None: its flags join the common "executor" group), and takes
    the settings and the poll interval as its constructor's arguments. It may check its settings
    (:meth:`check_settings`), fill in defaults that depend on other flags (:meth:`complete_settings`),
    or refuse to run on this machine at all (:meth:`check_usable`); each raises :class:`ExecutorError`.
    One built from something else overrides :meth:`create` (the inline executor takes the job function).
    """

    name: ClassVar[str]
    Settings: ClassVar[type | None] = None
    flags_prefix: ClassVar[str] = ""
    flags_title: ClassVar[str | None] = None
    where: ClassVar[str]  # where its jobs run, for --executor's help: "on SLURM"
    cancel_on_stop: ClassVar[bool] = False  # whether Ctrl-C of the controller stops the jobs too

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            EXECUTORS[cls.name] = cls

    def __init__(self, poll_interval: float = 0.0) -> None:
        self.poll_interval = poll_interval
        self._last: dict[str, JobStatus] = {}

    # -- flags and construction ---------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, common: argparse._ArgumentGroup) -> None:
        """This executor's flags: in a group of their own, or in ``common`` (the "executor" group)."""
        if cls.Settings is not None:
            group = common if cls.flags_title is None else parser.add_argument_group(cls.flags_title)
            add_flags(group, cls.Settings, prefix=cls.flags_prefix)

    @classmethod
    def from_args(cls, args: argparse.Namespace, job: Callable[[JobRequest], object] | None = None) -> Executor:
        """The executor the parsed flags set up; ``job`` runs one request in this process (what the inline executor does)."""
        cls.check_usable()
        return cls.create(cls.read_settings(args), args, job)

    @classmethod
    def read_settings(cls, args: argparse.Namespace) -> Any:
        """This executor's settings from the parsed flags, completed and checked (None: it has none)."""
        if cls.Settings is None:
            return None
        settings = cls.complete_settings(from_flags(cls.Settings, args, prefix=cls.flags_prefix), args)
        cls.check_settings(settings)
        return settings

    @classmethod  # noqa: B027  (an optional hook: most executors have nothing to check)
    def check_usable(cls) -> None:
        """Raise ExecutorError where this executor cannot run on this machine (before its settings are read)."""

    @classmethod
    def complete_settings(cls, settings: Any, args: argparse.Namespace) -> Any:
        """``settings`` with what the flags left open filled in (e.g. from the controller's own flags)."""
        return settings

    @classmethod  # noqa: B027  (an optional hook: most executors have nothing to check)
    def check_settings(cls, settings: Any) -> None:
        """Raise ExecutorError naming the flag where a setting cannot work."""

    @classmethod
    def create(cls, settings: Any, args: argparse.Namespace, job: Callable[[JobRequest], object] | None) -> Executor:
        """The executor of checked ``settings``, polling every --poll_interval seconds."""
        return cls(settings, poll_interval=from_flags(PollSettings, args).poll_interval)

    # -- the interface the controller drives --------------------------------------------------------------------

    def submit(self, request: JobRequest) -> str:
        """Start ``request``'s job, appending its output to ``request.log``; returns the id the journal keeps."""
        request.log.parent.mkdir(parents=True, exist_ok=True)
        return self._submit(request)

    def poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The state of each of ``job_ids``, remembered as the last one seen."""
        statuses = self._poll(job_ids)
        self._last.update(statuses)
        return statuses

    def pause(self) -> None:
        """Wait before the next poll: the controller never busy-waits on its jobs."""
        time.sleep(self.poll_interval)

    @abstractmethod
    def _submit(self, request: JobRequest) -> str: ...

    @abstractmethod
    def _poll(self, job_ids: list[str]) -> dict[str, JobStatus]: ...

    @abstractmethod
    def find(self, token: str) -> str | None: ...

    @abstractmethod
    def cancel(self, job_ids: list[str]) -> None: ...
