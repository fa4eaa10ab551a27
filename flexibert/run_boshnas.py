"""Search a graph library for the best architecture: BOSHNAS (or a baseline) proposes, an executor trains, the journal remembers.

    python flexibert/run_boshnas.py --dataset_file dataset/dataset_test.json --run_dir runs/test \\
        --tokenizer roberta_tokenizer --pretrain_dataset_dir tokenized_pretraining_dataset --glue_dir GLUE_data
    python -m flexibert.run_boshnas --dataset_file LIB.json --benchmark_file BENCH.json --executor inline \\
        --strategy evolution --budget 50 --run_dir runs/evolution_seed1 --seed 1

Each candidate's job (flexibert/candidate_job.py) pretrains it with MLM, warm-started by weight
transfer from its trained library neighbour with the largest overlap (at least --transfer_threshold;
then only --transfer_pretrain_steps steps), fine-tunes it on the GLUE task(s) and writes
<run_dir>/models/<hash>/results.json. With --benchmark_file the job looks the score up instead.

Everything is in --run_dir: journal.jsonl (every decision, append-only), job_config.json, models/,
history.csv, leaderboard.csv/.md, report/*.png, library_scored.json and the surrogate checkpoints.
Re-running the same command resumes: finished results are kept, running jobs are adopted and waited
for, lost or failed jobs are retried up to --max_retries times, then recorded as failed. Ctrl-C stops
cleanly (press it twice to stop at once); a later run goes on from there. --budget may be raised on
a resume; the settings that decide what is proposed or how models are trained may not.
"""

from __future__ import annotations

import sys

from flexibert.cluster.base import ExecutorError
from flexibert.search.controller import failure_summary, run_search
from flexibert.search.journal import RunDirError, SearchState
from flexibert.search.settings import SearchError, parse_args


def main(argv: list[str] | None = None) -> SearchState:
    args = parse_args(argv, description=__doc__)
    try:
        state = run_search(args)
    except (SearchError, RunDirError, ExecutorError) as err:
        sys.exit(f"error: {err}")
    if (failure := failure_summary(state)) is not None:
        sys.exit(f"error: {failure}")
    return state


if __name__ == "__main__":
    main()
