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
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from flexibert.data.glue import GLUE_TASKS, HUB_DATASET, GlueError, get_task, load_glue, tokenize_glue
from flexibert.data.tokenization import load_tokenizer
from flexibert.training.finetune import TOKENIZATION_FILE
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import write_json_atomic


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


def tokenize_tasks(args: argparse.Namespace) -> dict[str, int]:
    """Tokenise and save each task (skipping saved ones unless --overwrite); returns task -> examples written."""
    if args.max_seq_length < 1:
        raise GlueError(f"--max_seq_length {args.max_seq_length} must be at least 1")
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except (OSError, ValueError) as err:
        raise GlueError(str(err)) from err
    output = Path(args.output_dir)
    written = {}
    for name in tqdm(args.tasks, desc="tokenising GLUE", unit="task"):
        task = get_task(name)
        target = output / task.name
        if (target / "dataset_dict.json").is_file() and not args.overwrite:
            tqdm.write(f"{task.name}: kept {target} (pass --overwrite to redo it)")
            continue
        data = tokenize_glue(load_glue(task, args.glue_dir, args.cache_dir), task, tokenizer, args.max_seq_length)
        temp = output / f".{task.name}.tmp"  # save beside the target, then swap it in: no half-written task folder
        shutil.rmtree(temp, ignore_errors=True)
        data.save_to_disk(str(temp))
        write_json_atomic(temp / TOKENIZATION_FILE, {
            "task": task.name, "tokenizer": str(args.tokenizer), "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id, "max_seq_length": args.max_seq_length, "source": args.glue_dir or HUB_DATASET,
        })
        shutil.rmtree(target, ignore_errors=True)
        temp.rename(target)
        written[task.name] = sum(len(split) for split in data.values())
    return written


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    try:
        written = tokenize_tasks(args)
    except GlueError as err:
        sys.exit(f"error: {err}")
    print(f"tokenised {len(written)} GLUE task(s) ({sum(written.values()):,} examples, at most {args.max_seq_length} tokens) "
          f"into {args.output_dir}; {len(args.tasks) - len(written)} kept")
    return written


if __name__ == "__main__":
    main()
