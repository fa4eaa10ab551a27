"""Wall time and peak memory of building graph libraries, against the original's method in the same run.

    python benchmarks/library_speed.py [--spaces test small] [--reference_samples 20]

Each library is built end to end by ``embeddings/generate_library.py`` (enumeration, hashes, edit
distances, 16-d embeddings, 100 biased neighbours) in a child process whose peak RSS is read back.
The original's cost for the same library is extrapolated from timed units of its method, run here
in this process: networkx ``optimize_graph_edit_distance`` (first yield) on 1 % of all pairs, and one
``sklearn.metrics.pairwise_distances`` call per pair inside the biased neighbour sort (its two
dominant stages; the original took 13 h for the test space). Targets on 2 cores: test at lps 2
<= 60 s and <= 2 GB; small at lps 2 <= 10 min and <= 6 GB; fidelity (Spearman) >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
from sklearn.metrics import pairwise_distances

from embeddings.design_space import load_design_space
from embeddings.distance import label_ranks
from embeddings.graph import model_graph

REPO = Path(__file__).resolve().parents[1]
SPACES = {"test": "design_space_test.yaml", "small": "design_space_small.yaml"}
CHILD = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def build(space_file: Path, out_file: Path) -> tuple[float, float]:
    """Seconds and peak GiB of one generate_library.py run."""
    command = [sys.executable, "-c", CHILD, sys.executable, str(REPO / "embeddings" / "generate_library.py"),
               "--design_space_file", str(space_file), "--dataset_file", str(out_file), "--layers_per_stack", "2",
               "--n_jobs", "2", "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"generate_library.py failed:\n{done.stderr[-2000:]}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 2**20


def original_unit_costs(space_file: Path, samples: int) -> tuple[float, float]:
    """Seconds per GED pair (first networkx yield, the original's approx=1) and per neighbour-sort distance call."""
    space = load_design_space(space_file)
    dicts = list(space.enumerate(2))
    ranks = label_ranks(space.ops_list())

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(samples):
        a, b = (model_graph(dicts[i]).to_networkx() for i in rng.choice(len(dicts), 2, replace=False))
        next(nx.optimize_graph_edit_distance(
            a, b,
            node_subst_cost=lambda x, y: abs(ranks[x["label"]] - ranks[y["label"]]),
            node_del_cost=lambda x: ranks[x["label"]], node_ins_cost=lambda x: ranks[x["label"]],
            edge_del_cost=lambda e: 0.1, edge_ins_cost=lambda e: 0.1))
    ged = (time.perf_counter() - start) / samples
    points = rng.normal(size=(2, 16))
    start = time.perf_counter()
    for _ in range(500):
        pairwise_distances(points[:1], points[1:])
    return ged, (time.perf_counter() - start) / 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    parser.add_argument("--reference_samples", type=int, default=20, help="GED pairs timed for the original's extrapolation")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.spaces:
            space_file = REPO / "design_space" / SPACES[name]
            out_file = Path(scratch) / f"{name}.json"
            seconds, peak = build(space_file, out_file)
            library = json.loads(out_file.read_text())
            count = len(library["hashes"])
            ged_pair, neighbour_call = original_unit_costs(space_file, args.reference_samples)
            original = 0.01 * count * (count - 1) / 2 * ged_pair + count * (count - 1) * neighbour_call
            rows.append((name, count, seconds, peak, library["metadata"]["fidelity_spearman"], original))
    print("| space (lps 2) | models | wall s | peak GiB | fidelity (Spearman) | original, extrapolated | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, count, seconds, peak, spearman, original in rows:
        speedup = original / seconds
        print(f"| {name} | {count:,} | {seconds:.1f} | {peak:.2f} | {spearman:.3f} | {original / 3600:.1f} h | {speedup:,.0f}x |")


if __name__ == "__main__":
    main()
