"""Tokenise GLUE tasks once with the project's tokenizer and save them for fine-tuning (--dataset_dir).

    python flexibert/tokenize_glue_datasets.py --tokenizer models/roberta_tokenizer --output_dir GLUE_data
    python -m flexibert.tokenize_glue_datasets --tokenizer models/roberta_tokenizer --glue_dir ../shared/data/glue \\
        --tasks sst2 mrpc stsb rte --max_seq_length 128

Each task is saved with save_to_disk as <output_dir>/<task>/ (splits train and validation, MNLI
validation_matched and validation_mismatched; columns input_ids, attention_mask, label). Sentence
pairs are encoded as the tokenizer's pairs, truncated to --max_seq_length and not padded: the
fine-tuning collator pads each batch. <output_dir>/<task>/tokenization.json records the tokenizer,
so that fine-tuning refuses data made with another one. Existing tasks are kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys

from flexibert.data.glue import GLUE_TASKS, HUB_DATASET, GlueError, tokenize_tasks
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (the one the models are pretrained with)")
    parser.add_argument("--max_seq_length", type=int, default=128, help="truncate inputs to this many tokens")
    parser.add_argument("--tasks", nargs="+", default=list(GLUE_TASKS), help="GLUE tasks to tokenise")
    parser.add_argument("--glue_dir", default=None,
                        help="folder of GLUE TSVs (<TASK>/train.tsv, dev.tsv; MNLI dev_matched.tsv, dev_mismatched.tsv); "
                             f"default: the hub ({HUB_DATASET})")
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder for hub downloads (default: the HF cache)")
    parser.add_argument("--output_dir", default="GLUE_data", help="folder to save <task>/ datasets in")
    parser.add_argument("--overwrite", action="store_true", help="re-tokenise tasks already saved in --output_dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    try:
        written = tokenize_tasks(args.tasks, args.tokenizer, args.output_dir, max_seq_length=args.max_seq_length,
                                 glue_dir=args.glue_dir, cache_dir=args.cache_dir, overwrite=args.overwrite)
    except GlueError as err:
        sys.exit(f"error: {err}")
    print(f"tokenised {len(written)} GLUE task(s) ({sum(written.values()):,} examples, at most {args.max_seq_length} tokens) "
          f"into {args.output_dir}; {len(args.tasks) - len(written)} kept")
    return written


if __name__ == "__main__":
    main()
