"""Export a search's best models as loadable folders (weights, tokenizer, config) with a model card each.

    python -m flexibert.export_models --run_dir runs/boshnas_glue_seed1 --top 3
    python -m flexibert.export_models --run_dir runs/front --front --top 5 --output_dir exported/
    python -m flexibert.export_models --run_dir runs/boshnas_glue_seed1 --models 3fa2c1d09b7e

Each model lands in <output_dir>/<hash prefix>/ and loads with ``AutoModel.from_pretrained`` after
``import flexibert``; its README.md is a model card with the scores the search recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexibert.search.export import ExportError, chosen_models, export_model
from flexibert.search.journal import Journal, RunDirError
from flexibert.search.layout import RunLayout
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--run_dir", required=True, help="the search's run folder")
    parser.add_argument("--top", type=int, default=1,
                        help="export the best N models in the leaderboard's order (by score, or by a run's one other objective)")
    parser.add_argument("--front", action="store_true", help="choose among the Pareto front's models (see leaderboard.md)")
    parser.add_argument("--models", nargs="+", metavar="HASH", help="export these models (hash prefixes) instead")
    parser.add_argument("--output_dir", help="where the model folders go (default: <run_dir>/exported)")
    parser.add_argument("--overwrite", action="store_true", help="replace model folders exported before")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    run = RunLayout(args.run_dir)
    if not run.journal.is_file():
        sys.exit(f"error: {run.root} is not a search run folder (no {run.journal.name}); pass run_boshnas.py's --run_dir")
    output = Path(args.output_dir) if args.output_dir else run.root / "exported"
    try:
        state = Journal(run.root).state(repair=False)
        chosen = chosen_models(state, args.top, args.front, args.models)
        taken = [output / h[:12] for h in chosen if (output / h[:12]).exists()]
        if taken and not args.overwrite:
            raise ExportError(f"{', '.join(map(str, taken))} exist(s); pass --overwrite to replace")
        paths = [export_model(run, state, h, output / h[:12]) for h in chosen]
    except (ExportError, RunDirError) as err:
        sys.exit(f"error: {err}")
    for model_hash, path in zip(chosen, paths, strict=True):
        print(f"exported {model_hash[:12]} (score {state.candidates[model_hash].score:.2f}) to {path}; "
              f"load with AutoModel.from_pretrained({str(path)!r}) after `import flexibert`")
    return paths


if __name__ == "__main__":
    main()
