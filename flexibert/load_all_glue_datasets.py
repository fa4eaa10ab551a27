"""Load the GLUE tasks once, to fill the datasets cache or to check a local GLUE folder, and print row counts.

    python flexibert/load_all_glue_datasets.py                     # all 9 tasks from the hub (cache them for offline nodes)
    python -m flexibert.load_all_glue_datasets --glue_dir ../shared/data/glue --tasks sst2 mrpc stsb rte

Run it on a machine with internet before fine-tuning on compute nodes without it (they then need
HF_DATASETS_OFFLINE=1 and the same --cache_dir), or on a GLUE TSV folder to validate it: a missing or
malformed file is reported with its line number.
"""

from __future__ import annotations

import argparse
import sys

from flexibert.data.glue import GLUE_TASKS, HUB_DATASET, GlueError, glue_row_counts
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(GLUE_TASKS), help="GLUE tasks to load")
    parser.add_argument("--glue_dir", default=None,
                        help="folder of GLUE TSVs (<TASK>/train.tsv, dev.tsv; MNLI dev_matched.tsv, dev_mismatched.tsv); "
                             f"default: the hub ({HUB_DATASET})")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder for hub downloads (default: the HF cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    args = parse_args(argv)
    try:
        counts = glue_row_counts(args.tasks, args.glue_dir, args.cache_dir)
    except GlueError as err:
        sys.exit(f"error: {err}")
    print(f"{'task':<6} {'split':<22} {'rows':>8}")
    for task, splits in counts.items():
        for split, rows in splits.items():
            print(f"{task:<6} {split:<22} {rows:>8,}")
    total = sum(sum(splits.values()) for splits in counts.values())
    print(f"loaded {len(counts)} GLUE task(s), {total:,} labelled rows, from {args.glue_dir or HUB_DATASET}")
    return counts


if __name__ == "__main__":
    main()
