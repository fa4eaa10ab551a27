"""Design spaces too large to enumerate: the size check, uniform sampling (--sample), and the pieces that let a
library of a million sampled models build (batch hashing, parallel edit distances, the landmark budget)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from embeddings import generate_library
from embeddings.design_space import load_design_space, parse_design_space
from embeddings.distance import Dissimilarity, ParallelPairs, label_ranks
from embeddings.embedding import MIN_LANDMARKS, landmark_count
from embeddings.graph import graph_hash, model_graph, model_hash, model_hashes
from embeddings.library import Library
from embeddings.neighbors import _first_by_overlap_then_distance
from flexibert import hierarchical

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "design_space"
TINY = SPACES / "design_space_tiny.yaml"
TEST = SPACES / "design_space_test.yaml"
FULL = SPACES / "design_space.yaml"


def as_keys(models: list[dict]) -> list[str]:
    return [json.dumps(d, sort_keys=True) for d in models]


def tiny_with(**architecture) -> object:
    """The tiny space with some architecture lists replaced."""
    data = yaml.safe_load(TINY.read_text())
    data["architecture"].update(architecture)
    return parse_design_space(data)


# ------------------------------------------------------------------------------------------
# Sampling is uniform over exactly the models that enumeration gives
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("space", "lps", "het"), [
    (load_design_space(TINY), 1, False),
    (load_design_space(TINY), 2, False),
    (tiny_with(**{"number_of_feed-forward_stacks": [1, 2], "encoder_layers": [2, 4]}), 2, True),
    (tiny_with(**{"number_of_feed-forward_stacks": [1, 2], "encoder_layers": [1, 2]}), 1, False),
], ids=["tiny-lps1", "tiny-lps2", "het-ff-lps2", "two-depths-lps1"])
def test_sampled_models_are_exactly_models_of_the_space(space, lps: int, het: bool) -> None:
    enumerated = as_keys(list(space.enumerate(lps, het)))
    size = space.count(lps, het)
    assert len(set(enumerated)) == len(enumerated) == size
    everything = space.sample(size, lps, het, seed=0)
    assert sorted(as_keys(everything)) == sorted(enumerated)  # N = size: the whole space, each model once
    part = as_keys(space.sample(size // 3, lps, het, seed=1))
    assert len(set(part)) == len(part) == size // 3 and set(part) <= set(enumerated)
    assert part == as_keys(space.sample(size // 3, lps, het, seed=1))  # same seed, same models
    assert part != as_keys(space.sample(size // 3, lps, het, seed=2))
    large = as_keys(space.sample(size - 2, lps, het, seed=3))  # above half the space: draws the models left out
    assert len(set(large)) == size - 2 and set(large) <= set(enumerated)


def test_depth_is_drawn_in_proportion_to_its_number_of_models() -> None:
    """12 choices per layer at lps 1: depths 3, 4, 5 hold 12^3, 12^4, 12^5 models; 4,000 draws (a 1.5 % sample) must
    match those shares (chi-square, 2 degrees of freedom, p = 0.001), and each layer's hidden size is a fair coin."""
    space = tiny_with(encoder_layers=[3, 4, 5])
    counts = dict(space.depth_counts(1))
    assert counts == {3: 12**3, 4: 12**4, 5: 12**5}
    models = space.sample(4000, 1, seed=7)
    observed = np.array([sum(d["l"] == depth for d in models) for depth in counts])
    expected = 4000 * np.array(list(counts.values())) / space.count(1)
    assert ((observed - expected) ** 2 / expected).sum() < 13.8
    hidden = np.array([h == 64 for d in models for h in d["h"]])
    assert abs(hidden.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(hidden))
    assert [d["l"] for d in models] == sorted(d["l"] for d in models)  # grouped by depth, as enumeration


def test_sampling_a_huge_space_needs_no_enumeration() -> None:
    space = load_design_space(FULL)
    assert space.count(1, heterogeneous_ff=True) > 2**64
    models = space.sample(200, 1, heterogeneous_ff=True, seed=0)
    assert len(set(as_keys(models))) == 200 and all(d["l"] in (2, 4, 6) for d in models)
    assert all(all(w in space.feed_forward_hidden for ws in d["f"] for w in ws) for d in models)
    with pytest.raises(ValueError, match="cannot sample 13 distinct models from a space of 12"):
        load_design_space(TINY).sample(13, 2)


# ------------------------------------------------------------------------------------------
# generate_library: refusal, --sample, metadata
# ------------------------------------------------------------------------------------------


def test_a_space_too_large_to_enumerate_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "full.json"
    assert generate_library.main(["--design_space_file", str(FULL), "--dataset_file", str(out)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1 and "Traceback" not in printed.err
    assert "432,653,508 (4.3e+08) models" in printed.err and "--sample N" in printed.err and "--max_models 1,000,000" in printed.err
    assert not out.exists() and not list(tmp_path.iterdir())

    argv = ["--design_space_file", str(TINY), "--dataset_file", str(out), "--layers_per_stack", "1", "--max_models", "100"]
    assert generate_library.main(argv) == 2
    err = capsys.readouterr().err
    assert "144 models" in err and "a larger --layers_per_stack (2: 12 models)" in err and not out.exists()
    assert generate_library.main([*argv, "--sample", "101"]) == 2
    assert "--sample 101 is more than --max_models 100" in capsys.readouterr().err and not out.exists()
    assert generate_library.main([*argv[:-4], "--sample", "5000", "--max_models", "100", "--num_neighbors", "3"]) == 0
    assert len(Library.load(out)) == 12  # 5,000 is above the limit, but only the 12 models of lps 2 are built


def test_a_space_too_large_to_print_is_refused_with_its_magnitude(tmp_path: Path, capsys) -> None:
    data = yaml.safe_load(TINY.read_text())
    data["architecture"]["encoder_layers"] = [4000]  # 12^4000 models: more digits than Python prints (4,300)
    space_file = tmp_path / "deep.yaml"
    space_file.write_text(yaml.safe_dump(data))
    argv = ["--design_space_file", str(space_file), "--dataset_file", str(tmp_path / "deep.json"), "--layers_per_stack", "1"]
    assert generate_library.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has about 5.3e+4316 models" in err and not (tmp_path / "deep.json").exists()


def test_sample_builds_a_seeded_library_that_says_it_was_sampled(tmp_path: Path, capsys) -> None:
    argv = ["--design_space_file", str(TINY), "--layers_per_stack", "1", "--sample", "30", "--seed", "3", "--num_neighbors", "5"]
    assert generate_library.main([*argv, "--dataset_file", str(tmp_path / "a.json")]) == 0
    assert "144 models" in capsys.readouterr().out
    library = Library.load(tmp_path / "a.json")
    assert len(library) == 30 and library.metadata["sampled"] == {"models": 30, "seed": 3, "space_size": 144}
    assert library.metadata["space_size"] == 144 and library.metadata["layers_per_stack"] == 1
    assert set(as_keys(library.model_dicts)) <= set(as_keys(list(load_design_space(TINY).enumerate(1))))
    assert library.hashes == [model_hash(d) for d in library.model_dicts]
    assert generate_library.main([*argv, "--dataset_file", str(tmp_path / "b.json"), "--n_jobs", "2"]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()  # same seed, same file


def test_sample_not_below_the_space_size_enumerates_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny.json"
    argv = ["--design_space_file", str(TINY), "--dataset_file", str(out), "--sample", "12", "--num_neighbors", "3"]
    assert generate_library.main(argv) == 0
    assert "enumerating all of them instead" in capsys.readouterr().out
    library = Library.load(out)
    assert as_keys(library.model_dicts) == as_keys(list(load_design_space(TINY).enumerate(2)))
    assert "sampled" not in library.metadata and library.metadata["space_size"] == 12


def test_sample_is_refused_with_model_dicts(tmp_path: Path, capsys) -> None:
    source = tmp_path / "dicts.json"
    source.write_text(json.dumps(list(load_design_space(TINY).enumerate(2))))
    with pytest.raises(SystemExit) as stop:
        generate_library.main(["--model_dicts", str(source), "--sample", "3", "--dataset_file", str(tmp_path / "x.json")])
    assert stop.value.code == 2 and "--sample draws models from --design_space_file" in capsys.readouterr().err


def test_the_hierarchy_refines_a_sampled_library(tmp_path: Path) -> None:
    level1 = tmp_path / "level1.json"
    assert generate_library.main(["--design_space_file", str(TEST), "--dataset_file", str(level1), "--sample", "60",
                                  "--seed", "1", "--num_neighbors", "4"]) == 0
    old = Library.load(level1)
    old.performances = [float(i % 7) for i in range(len(old))]
    old.save(level1)
    out = tmp_path / "level2.json"
    assert hierarchical.main(["--old_dataset_file", str(level1), "--new_dataset_file", str(out), "--top_models", "2",
                              "--neighbors_per_model", "1", "--max_candidates_per_pair", "20", "--num_neighbors", "4"]) == 0
    new = Library.load(out)
    assert new.metadata["hierarchy_level"] == 2 and new.metadata["layers_per_stack"] == 1
    assert new.metadata["parent_sampled"] == {"models": 60, "seed": 1, "space_size": 9312}
    assert new.hashes[:2] == new.metadata["top_models"] and all(h in old for h in new.metadata["top_models"])


# ------------------------------------------------------------------------------------------
# What makes a million models build: the same values, computed faster
# ------------------------------------------------------------------------------------------


def test_batch_hashes_are_the_original_hashes() -> None:
    space = load_design_space(FULL)
    models = space.sample(300, 1, seed=4) + space.sample(200, 2, heterogeneous_ff=True, seed=5)
    hetero = {"l": 2, "o": [["sa_sdp_64", "c_9_64", "sa_sdp_64"], ["l_dct_32"] * 4], "h": [192, 128], "f": [[1024], [512, 512]]}
    models.insert(7, hetero)
    expected = [graph_hash(model_graph(d)) for d in models]
    assert [model_hash(d) for d in models] == expected
    assert model_hashes(models, batch=128) == expected
    assert model_hashes(models, workers=2, batch=64) == expected


def test_parallel_distances_are_the_serial_ones() -> None:
    space = load_design_space(TEST)
    models = space.sample(500, 2, seed=0)
    distances = Dissimilarity(models, label_ranks(space.ops_list()))
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, len(models), 70_000), rng.integers(0, len(models), 70_000)
    with ParallelPairs(distances, workers=2) as parallel:
        assert len(parallel) == len(models)
        assert np.array_equal(parallel.pairs(left, right), distances.pairs(left, right))


def test_large_libraries_use_fewer_landmarks() -> None:
    assert landmark_count(10_000) == 256 and landmark_count(60) == 60 and landmark_count(60, num_landmarks=20) == 20
    assert landmark_count(1_000_000) == MIN_LANDMARKS == 48
    assert 48 < landmark_count(300_000) < 256


def test_neighbour_selection_is_the_stable_sort_it_replaces() -> None:
    """Long runs pick their first neighbours without sorting the run; the choice, ties included, is a stable sort's."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        size, count = int(rng.integers(1, 600)), int(rng.integers(1, 120))
        overlap = rng.integers(0, 6, size)
        distance = rng.integers(0, 4, size).astype(float) if trial % 2 else rng.random(size)  # many exact ties, or none
        expected = np.lexsort((distance, -overlap))[:count]
        assert np.array_equal(_first_by_overlap_then_distance(overlap, distance, count), expected)
