"""A synthetic benchmark file for a graph library: scores from a smooth function of the architecture plus heteroscedastic noise.

    python -m flexibert.synthetic_benchmark --dataset_file dataset/dataset_test.json --output dataset/synthetic_test.json

It lets search strategies be compared in seconds (``run_boshnas.py --benchmark_file``,
``compare_strategies.py``) and is what the tests search. The score (0-100) rewards attention layers,
wider hidden and feed-forward sizes and an attention layer followed by a different operation, with
diminishing returns; the noise's standard deviation grows with the share of linear-transform ('l')
layers, so the aleatoric part of BOSHNAS's surrogate has something to find. It is NOT a proxy for
real GLUE scores. Each model's noise is seeded by its hash, so a file is reproducible.
"""

from __future__ import annotations

import argparse

import numpy as np

from embeddings.library import Library
from flexibert.search.benchmarks import synthetic_scores
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import write_json_atomic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset_file", required=True, help="graph library JSON whose models get scores")
    parser.add_argument("--output", required=True, help="benchmark JSON to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = parser.parse_args(argv)
    library = Library.load(args.dataset_file)
    entries = synthetic_scores(library, args.seed)
    write_json_atomic(args.output, {"description": "synthetic benchmark (flexibert/synthetic_benchmark.py); not GLUE",
                                    "library": args.dataset_file, "seed": args.seed, "entries": entries})
    scores = np.array([e["scores"]["glue"] for e in entries])
    print(f"wrote {args.output}: {len(entries):,} models, scores {scores.min():.1f}-{scores.max():.1f} (mean {scores.mean():.1f})")


if __name__ == "__main__":
    main()
