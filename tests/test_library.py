"""Embeddings, neighbours, the library file and the generate_library CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import BERT_TINY

from embeddings import generate_library
from embeddings.design_space import load_design_space
from embeddings.embedding import MatrixDistances, embed, fidelity
from embeddings.graph import model_graph, model_hash
from embeddings.library import Library, LibraryFileError
from embeddings.neighbors import biased_neighbors, distance_neighbors, find_neighbors, prefix_overlap

REPO = Path(__file__).resolve().parents[1]
TEST_SPACE = REPO / "design_space" / "design_space_test.yaml"
TINY_SPACE = REPO / "design_space" / "design_space_tiny.yaml"


@pytest.fixture(scope="module")
def test_library() -> Library:
    """The test space at lps 2, with 2-layer and 4-layer models (9,312)."""
    return Library.from_design_space(load_design_space(TEST_SPACE), layers_per_stack=2)


@pytest.fixture(scope="module")
def sample(test_library: Library) -> tuple[list[dict], list[tuple[str, ...]]]:
    """A seeded sample of 400 models of the test space and their label lists."""
    picks = np.random.default_rng(0).choice(len(test_library), 400, replace=False)
    dicts = [test_library.model_dicts[i] for i in picks]
    return dicts, [model_graph(d).labels for d in dicts]


def test_embeddings_preserve_edit_distances_and_are_seeded(test_library: Library) -> None:
    sub = Library.from_model_dicts(test_library.model_dicts[::8])
    distances = sub.dissimilarity()
    first = embed(distances, size=16, method="GD", seed=3, epochs=5)
    assert first.shape == (len(sub), 16) and first.dtype == np.float64
    assert fidelity(first, distances) >= 0.9
    assert np.array_equal(first, embed(distances, size=16, method="GD", seed=3, epochs=5))
    assert not np.allclose(first, embed(distances, size=16, method="GD", seed=4, epochs=5))
    mds = embed(distances, size=16, method="MDS", seed=3)
    assert fidelity(mds, distances) >= 0.9


def test_embedding_of_a_euclidean_matrix_recovers_it() -> None:
    points = np.random.default_rng(0).normal(size=(60, 3))
    matrix = np.linalg.norm(points[:, None] - points[None], axis=2)
    coords = embed(MatrixDistances(matrix), size=3, method="MDS", num_landmarks=20)
    assert np.allclose(np.linalg.norm(coords[:, None] - coords[None], axis=2), matrix, atol=1e-6)


def test_unknown_embedding_method_is_named() -> None:
    with pytest.raises(ValueError, match="unknown embedding method 'tsne'"):
        embed(MatrixDistances(np.zeros((3, 3))), method="tsne")


def _reference_biased(labels, emb, k):
    result = []
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        others.sort(key=lambda j: (-prefix_overlap(labels[i], labels[j]), float(np.linalg.norm(emb[i] - emb[j]))))
        result.append(others[:k])
    return np.array(result)


@pytest.mark.parametrize("k", [1, 7, 100])
def test_biased_neighbours_match_the_definition(sample, k: int) -> None:
    _, labels = sample
    emb = np.random.default_rng(k).normal(size=(len(labels), 16))
    assert np.array_equal(biased_neighbors(labels, emb, k), _reference_biased(labels, emb, k))


def test_distance_neighbours_are_the_nearest_others() -> None:
    emb = np.random.default_rng(0).normal(size=(200, 4))
    found = distance_neighbors(emb, 10)
    full = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    np.fill_diagonal(full, np.inf)
    assert np.array_equal(found, np.argsort(full, axis=1)[:, :10])


def test_model_is_never_its_own_neighbour_even_with_identical_embeddings(sample) -> None:
    _, labels = sample
    emb = np.zeros((len(labels), 2))  # all ties: the query must still be excluded
    for method in ("biased", "distance"):
        found = find_neighbors(labels, emb, 5, method)
        assert not (found == np.arange(len(labels))[:, None]).any()
        assert all(len(set(row)) == 5 for row in found)


def test_num_neighbors_is_clipped_with_a_warning(sample) -> None:
    _, labels = sample
    labels = labels[:6]
    with pytest.warns(UserWarning, match="num_neighbors=100 but the library has 6 models: using 5"):
        found = find_neighbors(labels, np.random.default_rng(0).normal(size=(6, 2)), 100)
    assert found.shape == (6, 5)


def test_biased_order_prefers_shared_leading_layers(test_library: Library) -> None:
    """Biased neighbours: BERT-Tiny-like model 0's first neighbour keeps its first layer and its heads."""
    sub = Library.from_model_dicts(test_library.model_dicts[:96])
    sub.build_embeddings(num_neighbors=10)
    first = model_graph(sub.model_dict(sub.neighbors[0][0])).labels
    assert prefix_overlap(model_graph(BERT_TINY).labels, first) >= 5
    overlaps = [prefix_overlap(model_graph(BERT_TINY).labels, model_graph(sub.model_dict(h)).labels) for h in sub.neighbors[0]]
    assert overlaps == sorted(overlaps, reverse=True)


def test_library_round_trip_and_lookup(tmp_path) -> None:
    library = Library.from_design_space(load_design_space(TINY_SPACE), layers_per_stack=2)
    library.build_embeddings(embedding_size=4, num_neighbors=3, seed=1)
    library.performances[2] = 0.0
    path = tmp_path / "lib.json"
    library.save(path)
    data = json.loads(path.read_text())
    assert list(data)[:9] == ["dataset", "design_space", "ops_list", "num_neighbors", "model_dicts", "hashes", "embeddings",
                              "neighbors", "performances"]
    assert data["num_neighbors"] == 3 and data["metadata"]["layers_per_stack"] == 2 and data["metadata"]["seed"] == 1
    loaded = Library.load(path)
    assert loaded.hashes == library.hashes and loaded.model_dicts == library.model_dicts
    assert np.array_equal(loaded.embeddings, library.embeddings) and loaded.neighbors == library.neighbors
    assert loaded.performances[2] == 0.0 and loaded.performances[0] is None
    assert loaded.index(model_hash(BERT_TINY)) == library.hashes.index(model_hash(BERT_TINY))
    assert loaded.model_dict(library.hashes[5]) == library.model_dicts[5]
    with pytest.raises(KeyError, match="not in this library of 12 models"):
        loaded.index("0" * 64)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_original_style_file_without_embeddings_loads(tmp_path) -> None:
    """The original saves a stage-1 file with null embeddings/neighbours and num_neighbors 1."""
    path = tmp_path / "orig.json"
    path.write_text(json.dumps({"dataset": None, "design_space": {}, "ops_list": [], "num_neighbors": 1,
                                "model_dicts": [BERT_TINY], "hashes": [model_hash(BERT_TINY)], "embeddings": [None],
                                "neighbors": [None], "performances": [None]}))
    loaded = Library.load(path)
    assert loaded.embeddings is None and loaded.neighbors is None and len(loaded) == 1
    with pytest.raises(ValueError, match="no neighbours yet"):
        loaded.neighbors_of(loaded.hashes[0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"dataset": null, "model_dicts": [', "not valid JSON"),
        ('{"results": []}', "not a FlexiBERT library"),
        ('{"model_dicts": [{}], "hashes": []}', "column 'hashes' has 0 entries"),
        ('{"model_dicts": [], "hashes": [], "metadata": {"format_version": 99}}', "format version 99 is newer"),
    ],
)
def test_broken_library_files_give_clear_errors(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LibraryFileError, match=message):
        Library.load(path)
    with pytest.raises(LibraryFileError, match="no such library file"):
        Library.load(tmp_path / "missing.json")


def test_cli_builds_a_library_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "tiny.json"
    argv = ["--design_space", str(TINY_SPACE), "--dataset_file", str(out), "--num_neighbors", "20", "--seed", "5"]
    with pytest.warns(UserWarning, match="using 11"):
        assert generate_library.main(argv) == 0
    library = Library.load(out)
    assert len(library) == 12 and len(library.neighbors[0]) == 11 and library.embeddings.shape == (12, 16)
    assert library.metadata["hierarchy_level"] == 1 and library.metadata["fidelity_spearman"] > 0.9
    assert generate_library.main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    with pytest.warns(UserWarning):
        assert generate_library.main([*argv, "--overwrite"]) == 0
    assert np.array_equal(Library.load(out).embeddings, library.embeddings)  # same seed, same file


def test_cli_model_dicts_drops_duplicates(tmp_path, capsys) -> None:
    other = {**BERT_TINY, "f": [[1024], [1024]]}
    hetero = {"l": 1, "o": [["sa_sdp_64", "l_dct_64"]], "h": [128], "f": [[512]]}
    source = tmp_path / "dicts.json"
    source.write_text(json.dumps({"entries": [{"model_dict": d} for d in (BERT_TINY, other, BERT_TINY, hetero)]}))
    out = tmp_path / "lib.json"
    assert generate_library.main(["--model_dicts", str(source), "--dataset_file", str(out), "--num_neighbors", "2"]) == 0
    assert "dropped 1 duplicate model dict(s)" in capsys.readouterr().out
    library = Library.load(out)
    assert library.hashes == [model_hash(BERT_TINY), model_hash(other), model_hash(hetero)]


def test_cli_reports_bad_inputs(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**BERT_TINY, "n": [3, 2]}]))
    assert generate_library.main(["--model_dicts", str(bad), "--dataset_file", str(tmp_path / "x.json")]) == 2
    assert "model dict #0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_library.parse_args(["--dataset_file", "x.json"])
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.zeros((3, 3)))
    argv = ["--design_space", str(TINY_SPACE), "--dataset_file", str(tmp_path / "y.json"), "--diss_mat_file", str(matrix)]
    assert generate_library.main(argv) == 2
    assert "matrix is 3 x 3 but the library has 12 models" in capsys.readouterr().err
