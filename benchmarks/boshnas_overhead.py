"""Per-round overhead of BOSHNAS (surrogate fit + proposal) with ~100 evaluated models, against references in the same run.

    python benchmarks/boshnas_overhead.py [--dataset_file LIBRARY.json] [--evaluated 100] [--rounds 4]

Without ``--dataset_file`` the 9,312-graph library of design_space_test.yaml at lps 2 is built first
(embeddings/generate_library.py, about 15 s). Scores come from flexibert/synthetic_benchmark.py. The
search has scored ``evaluated - rounds`` random models; each timed round adds one score and proposes one
model (``--max_concurrent 1``), always by optimisation (GOBI), the costly branch. Rows:

- BOSHNAS as run_boshnas.py runs it: surrogate warm-started from the previous round, mini-batches of 16,
  all GOBI restarts as one batched tensor;
- the same with the surrogate refitted from scratch every round (what warm starting saves);
- the original's method: batch-size-1 training of the same networks, one GOBI run per
  start point (the original ran them in a thread pool; 2 cores here);
- GP-based BO (scikit-learn, expected improvement over every untried model) and random search.

Target (issue 6): a BOSHNAS round <= 5 s on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even where another checkout is installed in editable mode

from embeddings.library import Library  # noqa: E402
from flexibert.search.benchmarks import synthetic_scores  # noqa: E402
from flexibert.search.boshnas.gobi import gobi, snap_to_library  # noqa: E402
from flexibert.search.boshnas.surrogate import Surrogate  # noqa: E402
from flexibert.search.strategies import Boshnas, BoshnasSettings, GaussianProcessBO, RandomSearch, SearchContext  # noqa: E402

TARGET_S = 5.0


def build_test_library(directory: Path) -> Path:
    path = directory / "dataset_test.json"
    subprocess.run([sys.executable, str(REPO / "embeddings" / "generate_library.py"), "--design_space_file",
                    str(REPO / "design_space" / "design_space_test.yaml"), "--dataset_file", str(path), "--layers_per_stack", "2",
                    "--n_jobs", "2"], check=True, capture_output=True)
    return path


class OriginalStyleBoshnas(Boshnas):
    """The original's costs on our networks: batch-size-1 surrogate training and one GOBI run per start point."""

    def __init__(self, settings: BoshnasSettings):
        super().__init__(settings)
        self._surrogate_class = functools.partial(Surrogate, batch_size=1)

    def _optimize(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[int]:
        s, features = self.settings, context.features
        starts = features[rng.integers(0, len(features), size=s.restarts)]  # the original: uniform, with replacement
        points = np.concatenate([gobi(self.surrogate, start[None], features.min(axis=0), features.max(axis=0), k1=s.k1,
                                      second_order=s.second_order, seed=round_index) for start in starts])
        return [int(i) for i in snap_to_library(points, features, context.available)][:count]


def time_rounds(make_strategy, library: Library, scores: dict[str, float], order: list[str], first: int, rounds: int,
                keep_strategy: bool) -> list[float]:
    """Seconds of each timed round (scores ``first``..``first + rounds - 1`` known), after one untimed warm-up round."""
    strategy = make_strategy()
    seconds = []
    for round_index, known in enumerate(range(first - 1, first + rounds)):
        if not keep_strategy:
            strategy = make_strategy()
        seen = {h: scores[h] for h in order[:known]}
        context = SearchContext(library, seen, set(seen))
        start = time.perf_counter()
        proposal = strategy.propose(context, 1, np.random.default_rng(round_index), round_index)
        elapsed = time.perf_counter() - start
        assert len(proposal) == 1 and library.hashes[proposal[0][0]] not in seen
        if round_index > 0:
            seconds.append(elapsed)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_file", help="graph library JSON with embeddings (default: build the test library at lps 2)")
    parser.add_argument("--evaluated", type=int, default=100, help="scored models in the last timed round")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per method (each adds one score)")
    parser.add_argument("--skip_original", action="store_true", help="leave out the slow original-style reference")
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.dataset_file) if args.dataset_file else build_test_library(Path(scratch))
        library = Library.load(path)
    scores = {entry["model_hash"]: entry["scores"]["glue"] for entry in synthetic_scores(library)}
    order = [library.hashes[i] for i in np.random.default_rng(0).permutation(len(library))[: args.evaluated]]
    first = args.evaluated - args.rounds + 1
    optimise_only = BoshnasSettings(prob_uncertainty=0.0, prob_random=0.0)

    methods = [
        ("BOSHNAS (warm-started surrogate, batched GOBI)", lambda: Boshnas(optimise_only), True),
        ("BOSHNAS, surrogate refitted from scratch", lambda: Boshnas(optimise_only), False),
        ("original's method (batch size 1, GOBI per start)", lambda: OriginalStyleBoshnas(optimise_only), True),
        ("GP-BO (scikit-learn, EI over all untried)", GaussianProcessBO, True),
        ("random search", RandomSearch, True),
    ]
    if args.skip_original:
        methods = [m for m in methods if not m[0].startswith("original")]
    print(f"library {path.name if args.dataset_file else 'test lps 2'}: {len(library):,} models; "
          f"rounds with {first}..{args.evaluated} scored models; target <= {TARGET_S:.0f} s per BOSHNAS round\n")
    print("| method | rounds | mean s/round | max s/round | vs BOSHNAS |")
    print("|---|---|---|---|---|")
    baseline = None
    for name, make, keep in methods:
        seconds = time_rounds(make, library, scores, order, first, args.rounds, keep)
        mean = statistics.fmean(seconds)
        baseline = baseline or mean
        print(f"| {name} | {len(seconds)} | {mean:.2f} | {max(seconds):.2f} | {mean / baseline:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
