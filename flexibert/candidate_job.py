"""One search candidate's job: (weight transfer from a trained neighbour) -> MLM pretraining -> GLUE fine-tuning -> results.json.

    python -m flexibert.candidate_job --run_dir runs/demo --model_hash HASH [--neighbor HASH] [--stage all]

The search controller (``run_boshnas.py``) starts this once per candidate through an executor (in
its own process, a subprocess, or a SLURM batch script); it can also be run by hand. Settings come
from ``<run_dir>/job_config.json``, which the controller writes at the start of a run, so that every
job of a run trains the same way. Everything lands in ``<run_dir>/models/<hash>/``:
``pretrained/`` (the MLM model), ``glue/`` (one folder per task) and ``results.json`` (written
atomically, last: its presence means the job succeeded). With a benchmark file the job looks the
score up instead of training. Re-running an interrupted job resumes from the stages' checkpoints.
"""

from __future__ import annotations

import argparse
import sys

from flexibert.data.glue import GlueError
from flexibert.search.job import STAGES, JobError, run_job
from flexibert.training.distributed import close_distributed
from flexibert.training.settings import ConfigurationError
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--run_dir", required=True, help="the search's run folder (holds job_config.json)")
    parser.add_argument("--model_hash", required=True, help="the candidate, a hash of the run's graph library")
    parser.add_argument("--neighbor", help="hash of a trained model of this run to warm-start pretraining from (weight transfer)")
    parser.add_argument("--attempt", type=int, default=1, help="attempt number (recorded in the start markers)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="run everything, or one stage (batch scripts run pretraining under torchrun, then the rest)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    try:
        return run_job(args.run_dir, args.model_hash, args.neighbor, args.attempt, args.stage)
    except (JobError, ConfigurationError, GlueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
    close_distributed()
