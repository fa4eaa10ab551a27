"""Wall time and peak memory of building graph libraries, against the original's method in the same run.

    python benchmarks/library_speed.py [--spaces test small] [--reference_samples 20] [--sample 20000]
    python benchmarks/library_speed.py --spaces --sample 1000000        # the sampled target row alone

Each library is built end to end by ``embeddings/generate_library.py`` (enumeration, hashes, edit
distances, 16-d embeddings, 100 biased neighbours) in a child process whose peak RSS is read back.
The original's cost for the same library is extrapolated from timed units of its method, run here
in this process: networkx ``optimize_graph_edit_distance`` (first yield) on 1 % of all pairs, and one
``sklearn.metrics.pairwise_distances`` call per pair inside the biased neighbour sort (its two
dominant stages; the original took 13 h for the test space). Targets on 2 cores: test at lps 2
<= 60 s and <= 2 GB; small at lps 2 <= 10 min and <= 6 GB; fidelity (Spearman) >= 0.9.

``--sample N`` adds a table of libraries of N models drawn uniformly from the full space
(design_space.yaml) at --layers_per_stack 1, the largest space it refuses to enumerate (1.9e17 models),
built with ``--sample N --n_jobs 2``; its memory is the peak of the summed PSS of the build's processes
(the hashing and distance workers included, shared pages counted once). Target: 1,000,000 models in
<= 10 min and <= 8 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import networkx as nx
import numpy as np
from sklearn.metrics import pairwise_distances

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even where another checkout is installed in editable mode

from embeddings.design_space import load_design_space  # noqa: E402
from embeddings.distance import label_ranks  # noqa: E402
from embeddings.graph import model_graph  # noqa: E402

SPACES = {"test": "design_space_test.yaml", "small": "design_space_small.yaml"}
SAMPLED_SPACE, SAMPLED_LPS = "design_space.yaml", 1
SAMPLE_TARGET = (1_000_000, 600.0, 8.0)  # models, seconds, GiB
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


def build_sample(count: int, out_file: Path) -> tuple[float, float, float, float]:
    """Seconds, peak GiB (summed PSS of the process tree), CPU seconds (all its processes) and the mean 1-minute load
    average of the machine during one ``generate_library.py --sample`` run (other work on the machine slows it)."""
    command = [sys.executable, str(REPO / "embeddings" / "generate_library.py"), "--design_space_file",
               str(REPO / "design_space" / SAMPLED_SPACE), "--dataset_file", str(out_file), "--layers_per_stack",
               str(SAMPLED_LPS), "--sample", str(count), "--n_jobs", "2", "--overwrite"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, loads = [0], []
    watcher = threading.Thread(target=_watch_memory, args=(child, peak, loads), daemon=True)
    watcher.start()
    _, err = child.communicate()
    seconds = time.perf_counter() - start
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode:
        raise RuntimeError(f"generate_library.py failed:\n{err[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, peak[0] / 2**20, cpu, float(np.mean(loads)) if loads else os.getloadavg()[0]


def _watch_memory(child: subprocess.Popen, peak: list[int], loads: list[float]) -> None:
    """Poll the summed PSS (KiB) of ``child`` and its descendants, and the load average, until it exits."""
    while child.poll() is None:
        peak[0] = max(peak[0], sum(_pss_kib(pid) for pid in _tree(child.pid)))
        loads.append(os.getloadavg()[0])
        time.sleep(2.0)  # reading a big process's smaps_rollup walks its page tables: poll rarely


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (Linux)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages split between their users), 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        return 0


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
    parser.add_argument("--spaces", nargs="*", choices=list(SPACES), default=list(SPACES),
                        help="enumerated spaces to build (none: only the --sample rows)")
    parser.add_argument("--reference_samples", type=int, default=20, help="GED pairs timed for the original's extrapolation")
    parser.add_argument("--sample", type=int, nargs="*", default=[20_000], metavar="N",
                        help=f"sampled libraries of N models of {SAMPLED_SPACE} at lps {SAMPLED_LPS} (1000000: the target row)")
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
            out_file.unlink()
        sampled = []
        for count in args.sample:
            out_file = Path(scratch) / f"sample{count}.json"
            seconds, peak, cpu, load = build_sample(count, out_file)
            sampled.append((count, seconds, peak, cpu, load, out_file.stat().st_size / 2**30, _fidelity(out_file)))
            out_file.unlink()
    if rows:
        print("| space (lps 2) | models | wall s | peak GiB | fidelity (Spearman) | original, extrapolated | speed-up |")
        print("|---|---|---|---|---|---|---|")
    for name, count, seconds, peak, spearman, original in rows:
        speedup = original / seconds
        print(f"| {name} | {count:,} | {seconds:.1f} | {peak:.2f} | {spearman:.3f} | {original / 3600:.1f} h | {speedup:,.0f}x |")
    if sampled:
        models, limit_s, limit_gib = SAMPLE_TARGET
        print(f"\n| --sample (full space, lps {SAMPLED_LPS}, 2 jobs) | wall s | CPU s (all processes) | load average "
              f"| peak GiB (all processes) | file GiB | fidelity | target ({models:,}: <= {limit_s:.0f} s, <= {limit_gib:.0f} GiB) |")
        print("|---|---|---|---|---|---|---|---|")
        for count, seconds, peak, cpu, load, size, spearman in sampled:
            verdict = ("met" if seconds <= limit_s and peak <= limit_gib else "missed") if count >= models else "(1,000,000 only)"
            print(f"| {count:,} | {seconds:.1f} | {cpu:.0f} | {load:.1f} | {peak:.2f} | {size:.2f} | {spearman:.3f} | {verdict} |")


def _fidelity(path: Path) -> float:
    """The fidelity stored in a library file's metadata, read from its end (the file may hold gigabytes)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 4096))
        tail = handle.read().decode("utf-8", "replace")
    return float(tail.rsplit('"fidelity_spearman":', 1)[1].split("}")[0].split(",")[0])


if __name__ == "__main__":
    main()
