"""Where candidate jobs run: one executor interface, with inline, local-subprocess and SLURM back ends."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from flexibert.cluster.base import InlineExecutor, JobRequest, LocalExecutor
from flexibert.cluster.slurm import add_slurm_arguments

EXECUTORS = ("inline", "local", "slurm")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and configure the executor."""
    run = parser.add_argument_group("executor")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="where jobs run: in this process, as subprocesses on this machine, or on SLURM")
    run.add_argument("--poll_interval", type=float, default=5.0, help="seconds between status checks of running jobs")
    run.add_argument("--job_threads", type=int, help="CPU threads per local job (default: cores / --max_concurrent)")
    add_slurm_arguments(parser)


def create_executor(args: argparse.Namespace, job: Callable[[JobRequest], object]):
    """The executor ``args`` ask for; ``job`` runs one request in this process (for the inline executor)."""
    if args.executor == "inline":
        return InlineExecutor(job)
    if args.executor == "local":
        threads = args.job_threads or max(1, (os.cpu_count() or 1) // args.max_concurrent)
        return LocalExecutor(threads=threads, poll_interval=args.poll_interval)
    from flexibert.cluster.slurm import SlurmExecutor

    return SlurmExecutor.from_args(args)
