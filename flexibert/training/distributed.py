"""Which process does what under torchrun (DDP): one writes files and reports, all train, and they end together."""

from __future__ import annotations

import os

import torch


def is_main_process() -> bool:
    """Whether this process writes files: always without a launcher, rank 0 under torchrun (DDP)."""
    return os.environ.get("RANK", "0") == "0"


def log(message: str) -> None:
    """Print once: on the process that writes files, not on every rank under torchrun."""
    if is_main_process():
        print(message)


def cpu_torchrun() -> bool:
    """torchrun on a machine without GPUs: DDP over CPU processes (gloo), which accelerate only sets up for ``use_cpu``.

    Without it every process trains the whole data set on its own.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def close_distributed() -> None:
    """At the end of a torchrun process: wait for every rank, then tear the process group down.

    Left to interpreter exit, a rank that finishes first can abort in the process group's destructor
    ("terminate called without an active exception"), and torchrun then reports the whole run as failed.
    Call it only where the process ends: accelerate keeps its state, so no training may follow in the process.
    """
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()
