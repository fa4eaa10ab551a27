"""Interpolation between parent architectures and the hierarchical-step CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path

import pytest

from embeddings import generate_library
from embeddings.graph import model_hash
from embeddings.interpolation import count_candidates, interpolate
from embeddings.library import Library
from flexibert import hierarchical, run_boshnas
from flexibert.search.benchmarks import synthetic_scores
from flexibert.search.hierarchy import next_level_library, parse_args
from flexibert.search.journal import Event, Journal, SearchState

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "design_space" / "design_space_tiny.yaml"

# Two 4-layer parents built at 2 layers per stack. They differ in stack 0 in h, the sa parameter,
# the number of FF sub-layers and the FF width, and in stack 1 in the operation (l/dct vs c/5).
PARENT_A = {"l": 4, "h": [256, 256, 128, 128], "n": [4, 4, 4, 4], "o": ["sa", "sa", "l", "l"],
            "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]], "p": ["sdp", "sdp", "dct", "dct"]}
PARENT_B = {"l": 4, "h": [128, 128, 128, 128], "n": [4, 4, 4, 4], "o": ["sa", "sa", "c", "c"],
            "f": [[1024], [1024], [1024], [1024]], "p": ["wma", "wma", 5, 5]}
SHORT = {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["c", "c"], "f": [[512], [512]], "p": [9, 9]}


def expected_count(first: dict, second: dict, old_lps: int, new_lps: int) -> int:
    """The interpolation's size formula with a shared value counted once: per old stack, the product of the number of
    distinct values of n, h, nff, FF width and (o, p), raised to the number of new stacks per old stack."""
    total = 1
    for i in range(0, min(first["l"], second["l"]), old_lps):
        choices = [{d[k][i] for d in (first, second)} for k in ("n", "h")]
        choices += [{len(d["f"][i]) for d in (first, second)}, {d["f"][i][0] for d in (first, second)}]
        choices.append({(d["o"][i], d["p"][i]) for d in (first, second)})
        total *= math.prod(len(c) for c in choices) ** (old_lps // new_lps)
    return total


def assert_from_parents(candidate: dict, first: dict, second: dict) -> None:
    """Every layer value of the candidate is one of the parents' values at that layer."""
    for i in range(candidate["l"]):
        parents = [d for d in (first, second) if d["l"] > i]
        assert candidate["n"][i] in {d["n"][i] for d in parents}
        assert candidate["h"][i] in {d["h"][i] for d in parents}
        assert (candidate["o"][i], candidate["p"][i]) in {(d["o"][i], d["p"][i]) for d in parents}
        assert len(candidate["f"][i]) in {len(d["f"][i]) for d in parents}
        assert set(candidate["f"][i]) <= {w for d in parents for w in d["f"][i]}


@pytest.mark.parametrize("heterogeneous_ff", [False, True])
@pytest.mark.parametrize(("old_lps", "new_lps"), [(2, 1), (2, 2)])
def test_model_with_itself_gives_exactly_that_model(old_lps: int, new_lps: int, heterogeneous_ff: bool) -> None:
    for parent in (PARENT_A, PARENT_B, SHORT):
        assert interpolate(parent, parent, old_lps, new_lps, heterogeneous_ff) == {model_hash(parent): parent}


@pytest.mark.parametrize(("old_lps", "new_lps"), [(2, 1), (2, 2)])
def test_same_depth_parents_give_the_expected_candidates(old_lps: int, new_lps: int) -> None:
    candidates = interpolate(PARENT_A, PARENT_B, old_lps, new_lps)
    expected = expected_count(PARENT_A, PARENT_B, old_lps, new_lps)
    assert expected == {1: (16 * 2) ** 2, 2: 16 * 2}[new_lps]  # stack 0: h, p, nff, width x2 each; stack 1: o/p x2
    assert len(candidates) == expected == count_candidates(PARENT_A, PARENT_B, old_lps, new_lps)
    assert len({json.dumps(d) for d in candidates.values()}) == expected
    assert model_hash(PARENT_A) in candidates and model_hash(PARENT_B) in candidates
    for digest, candidate in candidates.items():
        assert digest == model_hash(candidate) and candidate["l"] == 4
        assert all(len(set(ff)) == 1 for ff in candidate["f"])  # homogeneous FF without the flag
        assert_from_parents(candidate, PARENT_A, PARENT_B)
        for key in ("n", "h", "o", "f", "p"):  # layers of one new stack share everything
            assert all(candidate[key][i] == candidate[key][i - i % new_lps] for i in range(4))


def test_different_depths_append_the_deeper_tail() -> None:
    candidates = interpolate(SHORT, PARENT_A, 2, 1)
    assert len(candidates) == expected_count(SHORT, PARENT_A, 2, 1) == (2 * 2 * 2 * 1 * 2) ** 2  # n, h, nff, width (512 in both), op
    assert model_hash(PARENT_A) in candidates and model_hash(SHORT) not in candidates
    for candidate in candidates.values():
        assert candidate["l"] == 4
        assert_from_parents(candidate, SHORT, PARENT_A)
        for key in ("n", "h", "o", "f", "p"):
            assert candidate[key][2:] == PARENT_A[key][2:]
    assert interpolate(PARENT_A, SHORT, 2, 1).keys() == candidates.keys()


def test_shared_parameter_is_one_option() -> None:
    wider = {**SHORT, "h": [256, 256]}  # same op and parameter (c, 9), only h differs
    candidates = interpolate(SHORT, wider, 2, 1)
    assert len(candidates) == 2 * 2  # two layers, each h in {128, 256}; the shared parameter 9 adds no copies
    assert {tuple(d["h"]) for d in candidates.values()} == {(128, 128), (128, 256), (256, 128), (256, 256)}
    assert all(d["p"] == [9, 9] for d in candidates.values())


def test_heterogeneous_feed_forward_is_preserved() -> None:
    mixed = {**SHORT, "f": [[512, 1024, 512], [512, 1024, 512]]}
    narrow = {**SHORT, "f": [[1024], [1024]]}
    hetero = interpolate(mixed, narrow, 2, 1, heterogeneous_ff=True)
    per_layer = {(512, 1024, 512), (1024, 1024, 512), (512,), (1024,)}  # sub-layer j from the parents' widths at j
    assert {tuple(map(tuple, d["f"])) for d in hetero.values()} == set(itertools.product(per_layer, repeat=2))
    assert model_hash(mixed) in hetero and model_hash(narrow) in hetero
    homogeneous = interpolate(mixed, narrow, 2, 1)
    per_layer = {(512,) * 3, (1024,) * 3, (512,), (1024,)}
    assert {tuple(map(tuple, d["f"])) for d in homogeneous.values()} == set(itertools.product(per_layer, repeat=2))


def test_large_pairs_are_sampled_reproducibly() -> None:
    full = interpolate(PARENT_A, PARENT_B, 2, 1)
    sample = interpolate(PARENT_A, PARENT_B, 2, 1, max_candidates=50, rng=random.Random(3))
    assert len(sample) == 50 and sample.keys() <= full.keys()
    assert sample.keys() == interpolate(PARENT_A, PARENT_B, 2, 1, max_candidates=50, rng=random.Random(3)).keys()


@pytest.mark.parametrize(("old_lps", "new_lps"), [(1, 2), (3, 2), (2, 0)])
def test_layers_per_stack_are_validated(old_lps: int, new_lps: int, capsys) -> None:
    with pytest.raises(ValueError, match="must be at most the old layers per stack .* and divide it exactly"):
        interpolate(SHORT, SHORT, old_lps, new_lps)
    with pytest.raises(SystemExit):
        hierarchical.parse_args(["--old_dataset_file", "x.json", "--old_layers_per_stack", str(old_lps),
                                 "--new_layers_per_stack", str(new_lps)])
    assert "divide it exactly" in capsys.readouterr().err


def test_hetero_format_parents_are_refused() -> None:
    hetero = {"l": 1, "o": [["sa_sdp_64", "c_9_64"]], "h": [128], "f": [[512]]}
    with pytest.raises(ValueError, match="standard model dicts"):
        interpolate(hetero, hetero, 1, 1)


# --------------------------------------------------------------------------------------------
# The CLI on the tiny design space (12 two-layer models at 2 layers per stack)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_library(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("library") / "tiny.json"
    assert generate_library.main(["--design_space_file", str(TINY_SPACE), "--dataset_file", str(path), "--num_neighbors", "5"]) == 0
    return path


def write_run(run_dir: Path, scores: dict[str, object]) -> None:
    """A run folder as a search leaves it: each model proposed and submitted in the journal, finished with its score
    (None: still in flight), and its results.json."""
    journal = Journal(run_dir)
    for number, (digest, score) in enumerate(scores.items()):
        (run_dir / "models" / digest).mkdir(parents=True)
        journal.append(Event.ROUND, round=number, proposals=[{"model_hash": digest, "method": "init", "neighbor": None}])
        journal.append(Event.SUBMIT, model_hash=digest, attempt=1, token=f"job-{number}", log=None)
        if score is not None:
            (run_dir / "models" / digest / "results.json").write_text(json.dumps({"glue_score": score, "status": "done"}))
            journal.append(Event.FINISH, model_hash=digest, score=score)


def run_cli(library: Path, out: Path, *extra: str) -> int:
    return hierarchical.main(["--old_dataset_file", str(library), "--new_dataset_file", str(out), "--num_neighbors", "5", *extra])


def test_cli_builds_the_next_level_from_a_run_dir(tiny_library: Path, tmp_path: Path, capsys) -> None:
    old = Library.load(tiny_library)
    scores = {digest: round(0.3 + 0.05 * i, 2) for i, digest in enumerate(old.hashes[:7])}
    write_run(tmp_path / "run", {**scores, "f" * 64: 0.99, old.hashes[8]: None})  # an unknown hash; an unfinished model
    out = tmp_path / "level2.json"
    assert run_cli(tiny_library, out, "--run_dir", str(tmp_path / "run")) == 0
    printed = capsys.readouterr()
    top = sorted(scores, key=scores.get, reverse=True)[:5]
    assert "7 scored models" in printed.out and f"best model: {top[0]}" in printed.out
    assert "not in" in printed.err and "f" * 64 in printed.err

    new = Library.load(out)
    assert new.metadata["hierarchy_level"] == 2 and new.metadata["layers_per_stack"] == 1
    assert new.metadata["top_models"] == top and new.metadata["parent_library"] == str(tiny_library)
    assert new.hashes[:5] == top and all(new.model_dict(h) == old.model_dict(h) for h in top)
    assert len(set(new.hashes)) == len(new) > len(top)
    assert new.design_space == old.design_space and new.ops_list == old.ops_list
    assert new.embeddings is not None and new.embeddings.shape == (len(new), 16)
    assert new.neighbors is not None and all(len(row) == 5 and set(row) <= set(new.hashes) for row in new.neighbors)
    assert all(h == model_hash(d) and d["l"] == 2 for h, d in zip(new.hashes, new.model_dicts, strict=True))

    before = out.read_bytes()
    assert run_cli(tiny_library, out, "--run_dir", str(tmp_path / "run")) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before


def test_cli_without_scores_says_where_it_looked(tiny_library: Path, tmp_path: Path, capsys) -> None:
    old = Library.load(tiny_library)
    (tmp_path / "run" / "models" / old.hashes[0]).mkdir(parents=True)  # model folders, but no journal: not a search's run
    (tmp_path / "run" / "models" / old.hashes[0] / "results.json").write_text(json.dumps({"glue_score": 0.5}))
    out = tmp_path / "level2.json"
    assert run_cli(tiny_library, out, "--run_dir", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'run' / 'journal.jsonl'} not found" in err and "--models_dir" in err
    assert not out.exists()

    write_run(tmp_path / "started", {old.hashes[1]: None})  # a journal, but nothing finished yet
    assert run_cli(tiny_library, out, "--run_dir", str(tmp_path / "started")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records no finished model" in err and str(tmp_path / "started" / "journal.jsonl") in err

    write_run(tmp_path / "elsewhere", {"e" * 64: 0.5})  # finished models, none of them in the library
    assert run_cli(tiny_library, out, "--run_dir", str(tmp_path / "elsewhere")) == 2
    err = capsys.readouterr().err
    assert "no scored models" in err and str(tmp_path / "elsewhere" / "journal.jsonl") in err and not out.exists()
    assert run_cli(tiny_library, out) == 2  # a fresh library has no performances either
    assert "'performances' column" in capsys.readouterr().err


def test_cli_reads_the_performances_column_and_the_original_layout(tiny_library: Path, tmp_path: Path, capsys) -> None:
    old = Library.load(tiny_library)
    old.performances[4] = 0.0  # a real score, the only one: it must be the top model
    scored = tmp_path / "scored.json"
    old.save(scored)
    assert run_cli(scored, tmp_path / "a.json", "--top_models", "3", "--neighbors_per_model", "2") == 0
    assert Library.load(tmp_path / "a.json").metadata["top_models"] == [old.hashes[4]]

    models_dir = tmp_path / "models"  # no trailing slash needed
    (models_dir / "glue" / old.hashes[2]).mkdir(parents=True)
    (models_dir / "glue" / old.hashes[2] / "all_results.json").write_text(json.dumps({"glue_score": 0.7}))
    assert run_cli(tiny_library, tmp_path / "b.json", "--models_dir", str(models_dir)) == 0
    assert "1 scored models" in capsys.readouterr().out
    new = Library.load(tmp_path / "b.json")
    assert new.metadata["top_models"] == [old.hashes[2]] and new.hashes[0] == old.hashes[2]


# --------------------------------------------------------------------------------------------
# The journal is the source of truth: a real (benchmark-lookup) search, then its results.json files damaged
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched_run(tiny_library: Path, tmp_path_factory) -> Path:
    """A finished random search of 6 of the tiny library's models, scored by synthetic-benchmark lookups (inline)."""
    work = tmp_path_factory.mktemp("searched")
    (work / "benchmark.json").write_text(json.dumps({"entries": synthetic_scores(Library.load(tiny_library), seed=0)}))
    run_boshnas.main(["--dataset_file", str(tiny_library), "--benchmark_file", str(work / "benchmark.json"), "--executor",
                      "inline", "--run_dir", str(work / "run"), "--strategy", "random", "--budget", "6"])
    return work / "run"


def next_level(tiny_library: Path, run_dir: Path, out: Path) -> Library:
    new, _ = next_level_library(parse_args(["--old_dataset_file", str(tiny_library), "--new_dataset_file", str(out),
                                            "--run_dir", str(run_dir), "--top_models", "3", "--neighbors_per_model", "2",
                                            "--num_neighbors", "5"]))
    return new


@pytest.mark.parametrize("damage", ["garbage", "missing", "other score"])
def test_a_damaged_results_json_keeps_the_journaled_score(tiny_library: Path, searched_run: Path, tmp_path: Path, damage: str,
                                                          capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(searched_run, run_dir)
    journaled = SearchState.replay(Journal(run_dir).read()).scores()
    assert len(journaled) == 6
    old = Library.load(tiny_library)
    expected = sorted(journaled, key=lambda h: (-journaled[h], old.index(h)))[:3]
    best = expected[0]
    capsys.readouterr()
    intact = next_level(tiny_library, run_dir, tmp_path / "intact.json")
    printed = capsys.readouterr()
    assert intact.metadata["top_models"] == expected and "warning" not in printed.err

    results = run_dir / "models" / best / "results.json"
    if damage == "garbage":
        results.write_bytes(b"\x00\xffnot json{")
    elif damage == "missing":
        results.unlink()
    else:
        results.write_text(json.dumps({**json.loads(results.read_text()), "glue_score": 0.0}))
    new = next_level(tiny_library, run_dir, tmp_path / "level2.json")
    printed = capsys.readouterr()
    assert new.metadata["top_models"] == expected and new.hashes[0] == best  # the best model is still the best
    assert "6 scored models" in printed.out and f"best model: {best} (glue_score {journaled[best]:.4f})" in printed.out
    warnings = [line for line in printed.err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and best in warnings[0] and str(run_dir / "journal.jsonl") in warnings[0]
    assert {"garbage": "(unreadable)", "missing": "(missing)", "other score": "(says 0.0)"}[damage] in warnings[0]
    assert not any(h in warnings[0] for h in journaled if h != best)  # only the damaged model is named
    assert new.hashes == intact.hashes  # the same library as from the intact run


def test_a_run_dir_without_a_journal_is_a_clear_error(tiny_library: Path, searched_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(searched_run, run_dir)
    (run_dir / "journal.jsonl").unlink()  # the results.json files alone are not trusted
    with pytest.raises(ValueError, match=r"is not a search run folder: .*journal\.jsonl not found; pass the --run_dir of a"):
        next_level(tiny_library, run_dir, tmp_path / "level2.json")
