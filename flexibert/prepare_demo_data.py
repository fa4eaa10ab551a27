"""Build offline demo data from the English text every Python ships: a pretraining corpus and two GLUE-layout tasks.

    python flexibert/prepare_demo_data.py --output_dir demo_data
    python -m flexibert.prepare_demo_data --output_dir demo_data --train_size 1000 --dev_size 250 --seed 2

Source. The standard library's ``pydoc_data.topics.topics`` (the language reference and built-in type
documentation behind ``help("if")``; about 55,000 words of prose on Python 3.11). Headings, tables,
grammar rules, interactive sessions and code blocks are dropped, inline markup (*emphasis*, footnote
marks, list bullets) is stripped, lines are re-flowed into paragraphs and split into sentences. A
sentence that occurs in several topics (sections are repeated in their chapters) is kept only once.
Topics are split between train and dev with --seed, so that no sentence is in both.

Output (in --output_dir):

    corpus/train.txt        one paragraph per line, the train topics: for save_roberta_tokenizer.py
                            --train_files and prepare_pretrain_dataset.py --text_files
    corpus/validation.txt   the same for the dev topics (held-out text; keep it out of pretraining
                            so that the GLUE dev sentences stay unseen)
    glue/CoLA/{train,dev}.tsv  acceptability: label 1 a real sentence, 0 the same sentence with its
                            words shuffled (every sentence appears both ways)
    glue/RTE/{train,dev}.tsv   sentence order: two consecutive sentences in their order (entailment)
                            or swapped (not_entailment) (every pair appears both ways)
    DATA.md                 what the data are and the commands that use them
    manifest.json           the settings; a re-run with the same settings does nothing

The labels are synthetic: this is NOT GLUE and scores are not comparable with GLUE scores. The tasks
load through the usual --glue_dir path (flexibert/glue_data.py) as tasks cola and rte, e.g.
``finetune_flexibert.py --glue_dir demo_data/glue --task_name cola`` or ``glue_score.py --glue_dir
demo_data/glue --tasks cola rte``. Sizes are numbers of examples per task (labels exactly balanced;
odd sizes are rounded down); when the text has fewer sentences, the sizes are capped (with a note).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flexibert.data.demo_corpus import DemoDataError, format_summary, prepare_demo_data
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="demo_data", help="folder for corpus/, glue/, DATA.md and manifest.json")
    parser.add_argument("--train_size", type=int, default=2000, help="train examples per task (capped by the available text)")
    parser.add_argument("--dev_size", type=int, default=500, help="dev examples per task (capped by the available text)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the topic split, the sampling and the word shuffles")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild even if --output_dir holds a build with other settings (replaces only corpus/, glue/, "
                             "DATA.md and manifest.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        summary = prepare_demo_data(Path(args.output_dir), args.train_size, args.dev_size, args.seed, overwrite=args.overwrite)
    except DemoDataError as err:
        raise SystemExit(f"error: {err}") from None
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
