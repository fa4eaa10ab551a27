"""Where candidate jobs run: one executor interface (base.py), with inline, local-subprocess and SLURM back ends.

Each back end registers itself by its ``name`` when its module is imported below; ``--executor``
offers the registered ones, and each brings its own flags (see flexibert/cluster/base.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from flexibert.cluster import inline, local, slurm  # noqa: F401  (importing a back end registers it)
from flexibert.cluster.base import EXECUTORS, Executor, JobRequest, PollSettings
from flexibert.utils.cli import add_flags

DEFAULT_EXECUTOR = "local"


def _where_jobs_run() -> str:
    """--executor's help, from what each executor says of itself: "in this process, ..., or on SLURM"."""
    places = [executor.where for executor in EXECUTORS.values()]
    return "where jobs run: " + (", ".join(places[:-1]) + ", or " if len(places) > 1 else "") + places[-1]


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the executor, then each executor's own flags."""
    common = parser.add_argument_group("executor")
    common.add_argument("--executor", choices=tuple(EXECUTORS), default=DEFAULT_EXECUTOR, help=_where_jobs_run())
    add_flags(common, PollSettings)
    for executor in EXECUTORS.values():
        executor.add_arguments(parser, common)


def create_executor(args: argparse.Namespace, job: Callable[[JobRequest], object]) -> Executor:
    """The executor ``args`` ask for; ``job`` runs one request in this process (for the inline executor)."""
    return EXECUTORS[args.executor].from_args(args, job)
