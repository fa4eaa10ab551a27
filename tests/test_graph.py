"""Architecture graphs and their WL sha256 hash."""

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import BERT_TINY, FLEXIBERT_MINI

from embeddings.design_space import load_design_space
from embeddings.graph import Graph, graph_hash, head_labels, model_graph, model_hash

SPACES = Path(__file__).resolve().parents[1] / "design_space"

BERT_TINY_HASH = "79cadebed0d9211f265df75c88666c35c7b3b2e3823206c928f099d3a0faa444"
HETERO = {"l": 2, "o": [["sa_sdp_64", "sa_wma_64", "l_dct_64", "c_9_64"], ["sa_sdp_32"] * 4], "h": [256, 128], "f": [[1024], [512, 512]]}
HETERO_PERMUTED = {**HETERO, "o": [["c_9_64", "l_dct_64", "sa_sdp_64", "sa_wma_64"], ["sa_sdp_32"] * 4]}


# ------------------------------------------------------------------------------------------
# Independent reference: graph and WL hash written from their definitions
# ------------------------------------------------------------------------------------------


def reference_head_labels(d: dict) -> list[list[str]]:
    if "p" in d:
        return [[f"{d['o'][i]}_h{d['h'][i]}_p-{d['p'][i]}"] * d["n"][i] for i in range(d["l"])]
    layers = []
    for i, ops in enumerate(d["o"]):
        labels = []
        for op in ops:
            kind, param, size = op.split("_")
            labels.append(f"{kind}_h{d['h'][i]}_p-{param}_a{size}")
        layers.append(labels)
    return layers


def reference_graph(d: dict) -> tuple[list[str], set[tuple[int, int]]]:
    labels, edges = ["input"], set()
    x = 0
    for heads, widths in zip(reference_head_labels(d), d["f"], strict=True):
        head_ids = list(range(len(labels), len(labels) + len(heads)))
        labels += heads
        a1 = len(labels)
        labels.append("add_norm")
        ff_ids = list(range(len(labels), len(labels) + len(widths)))
        labels += [f"f{w}" for w in widths]
        a2 = len(labels)
        labels.append("add_norm")
        edges |= {(x, h) for h in head_ids} | {(h, a1) for h in head_ids} | {(x, a1), (a1, a2)}
        chain = [a1, *ff_ids, a2]
        edges |= set(zip(chain, chain[1:], strict=False))
        x = a2
    labels.append("output")
    edges.add((x, len(labels) - 1))
    return labels, edges


def reference_hash(labels: list[str], edges) -> str:
    def sha(text):
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    v = len(labels)
    adjacency = [[0] * v for _ in range(v)]
    for i, j in edges:
        adjacency[i][j] = 1
    out_degree = [sum(row) for row in adjacency]
    in_degree = [sum(adjacency[i][j] for i in range(v)) for j in range(v)]
    current = [sha(str((out_degree[i], in_degree[i], labels[i]))) for i in range(v)]
    for _ in range(5):
        new = []
        for i in range(v):
            ins = sorted(current[j] for j in range(v) if adjacency[j][i])
            outs = sorted(current[j] for j in range(v) if adjacency[i][j])
            new.append(sha("".join(ins) + "|" + "".join(outs) + "|" + current[i]))
        current = new
    return sha(str(sorted(current)))


@pytest.fixture(scope="module")
def test_space():
    return load_design_space(SPACES / "design_space_test.yaml")


@pytest.fixture(scope="module")
def test_models(test_space):
    return list(test_space.enumerate(2))


@pytest.fixture(scope="module")
def test_graphs(test_models):
    return [model_graph(d) for d in test_models]


@pytest.fixture(scope="module")
def test_hashes(test_graphs):
    return [graph_hash(g) for g in test_graphs]


# ------------------------------------------------------------------------------------------
# Graph structure
# ------------------------------------------------------------------------------------------


def test_bert_tiny_graph_exact():
    graph = model_graph(BERT_TINY)
    assert graph.labels == (
        "input", "sa_h128_p-sdp", "sa_h128_p-sdp", "add_norm", "f512", "add_norm",
        "sa_h128_p-sdp", "sa_h128_p-sdp", "add_norm", "f512", "add_norm", "output",
    )  # fmt: skip
    assert graph.edges == (
        (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (3, 4), (3, 5), (4, 5),
        (5, 6), (5, 7), (5, 8), (6, 8), (7, 8), (8, 9), (8, 10), (9, 10), (10, 11),
    )  # fmt: skip
    assert len(graph.labels) == 12 and graph.num_edges == 17


def test_flexibert_mini_graph():
    graph = model_graph(FLEXIBERT_MINI)
    # V = 2 + Σ (n + nff + 2) = 2 + 2·(2+3+2) + 2·(4+1+2)
    assert len(graph.labels) == 2 + 2 * 7 + 2 * 7 == 30
    assert graph.num_edges == 2 * (4 + 3 + 3) + 2 * (8 + 1 + 3) + 1 == 45
    assert graph.labels[1:4] == ("sa_h256_p-sdp", "sa_h256_p-sdp", "add_norm")
    assert graph.labels[4:8] == ("f512", "f512", "f512", "add_norm")
    assert graph.labels[15:19] == ("l_h128_p-dct",) * 4
    assert graph.labels[-1] == "output"


def _check_structure(d: dict, graph: Graph) -> None:
    n = [len(heads) for heads in head_labels(d)]
    nff = [len(ff) for ff in d["f"]]
    assert len(graph.labels) == 2 + sum(ni + fi + 2 for ni, fi in zip(n, nff, strict=True))
    assert graph.num_edges == sum(2 * ni + fi + 3 for ni, fi in zip(n, nff, strict=True)) + 1
    assert len(set(graph.edges)) == graph.num_edges
    assert list(graph.edges) == sorted(graph.edges)
    v = len(graph.labels)
    assert all(0 <= i < j < v for i, j in graph.edges)  # upper triangular: a DAG in node order
    sources = {i for i, _ in graph.edges}
    targets = {j for _, j in graph.edges}
    assert sources == set(range(v - 1)) and targets == set(range(1, v))  # "full DAG"
    assert graph.labels[0] == "input" and graph.labels[-1] == "output"
    assert Counter(graph.labels)["add_norm"] == 2 * d["l"]


def test_structure_all_test_models(test_models, test_graphs):
    for d, graph in zip(test_models, test_graphs, strict=True):
        _check_structure(d, graph)


@pytest.mark.parametrize("d", [BERT_TINY, FLEXIBERT_MINI, HETERO, HETERO_PERMUTED], ids=["tiny", "mini", "hetero", "hetero-permuted"])
def test_structure_examples(d):
    _check_structure(d, model_graph(d))


def test_graph_matches_reference(test_models):
    sample = test_models[::17] + [FLEXIBERT_MINI, HETERO, HETERO_PERMUTED]
    for d in sample:
        graph = model_graph(d)
        labels, edges = reference_graph(d)
        assert list(graph.labels) == labels, d
        assert set(graph.edges) == edges, d


def test_node_size_histogram_test_lps2(test_graphs):
    sizes = Counter(len(g.labels) for g in test_graphs)
    assert dict(sizes) == {12: 24, 16: 48, 20: 24, 22: 576, 26: 2304, 30: 3456, 34: 2304, 38: 576}


def test_labels_in_ops_list(test_space, test_graphs):
    vocabulary = set(test_space.ops_list())
    used = {label for g in test_graphs for label in g.labels}
    assert used == vocabulary  # every op of the vocabulary is used and nothing else


def test_hetero_head_labels():
    assert head_labels(HETERO) == [
        ["sa_h256_p-sdp_a64", "sa_h256_p-wma_a64", "l_h256_p-dct_a64", "c_h256_p-9_a64"],
        ["sa_h128_p-sdp_a32"] * 4,
    ]
    assert head_labels(BERT_TINY) == [["sa_h128_p-sdp"] * 2] * 2
    assert head_labels({**BERT_TINY, "o": ["c", "c"], "p": [9, 5]}) == [["c_h128_p-9"] * 2, ["c_h128_p-5"] * 2]


def test_invalid_model_dict_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        model_graph({**BERT_TINY, "n": [2, 3]})


# ------------------------------------------------------------------------------------------
# Hash
# ------------------------------------------------------------------------------------------


def test_bert_tiny_hash():
    assert model_hash(BERT_TINY) == BERT_TINY_HASH
    labels, edges = reference_graph(BERT_TINY)
    assert reference_hash(labels, edges) == BERT_TINY_HASH
    assert model_hash(dict(reversed(list(BERT_TINY.items())))) == BERT_TINY_HASH  # key order is irrelevant


def test_hash_format_and_model_hash(test_models, test_hashes):
    assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in test_hashes)
    assert model_hash(test_models[123]) == test_hashes[123]
    assert test_hashes[0] == BERT_TINY_HASH  # the first model of the test space is BERT-Tiny


def test_hash_matches_reference(test_models, test_hashes):
    indices = list(range(0, len(test_models), 97)) + [len(test_models) - 1]
    for i in indices:
        assert reference_hash(*reference_graph(test_models[i])) == test_hashes[i], test_models[i]
    for d in (FLEXIBERT_MINI, HETERO, HETERO_PERMUTED):
        assert reference_hash(*reference_graph(d)) == model_hash(d)


def test_all_test_hashes_unique(test_hashes):
    assert len(test_hashes) == 9312
    assert len(set(test_hashes)) == 9312


def test_hash_invariant_to_node_numbering():
    graph = model_graph(FLEXIBERT_MINI)
    v = len(graph.labels)
    order = list(range(v))
    random.Random(7).shuffle(order)  # order[new] = old
    new_of = {old: new for new, old in enumerate(order)}
    shuffled = Graph(tuple(graph.labels[old] for old in order), tuple(sorted((new_of[i], new_of[j]) for i, j in graph.edges)))
    assert graph_hash(shuffled) == graph_hash(graph)
    # but reversing every edge is a different graph
    reversed_edges = Graph(graph.labels, tuple((j, i) for i, j in graph.edges))
    assert graph_hash(reversed_edges) != graph_hash(graph)


def test_hash_sensitive_to_every_choice():
    base = model_hash(FLEXIBERT_MINI)
    changes = [
        {"h": [256, 256, 128, 256]},  # one hidden size
        {"p": ["sdp", "wma", "dct", "dct"]},  # one parameter
        {"o": ["sa", "sa", "l", "sa"], "p": ["sdp", "sdp", "dct", "sdp"]},  # one op type
        {"n": [2, 2, 4, 2]},  # one head count
        {"f": [[512, 512, 512], [512, 512, 512], [1024], [512]]},  # one FF width
        {"f": [[512, 512, 512], [512, 512], [1024], [1024]]},  # one FF depth
        {"o": ["l", "l", "sa", "sa"], "p": ["dct", "dct", "sdp", "sdp"], "h": [128, 128, 256, 256], "n": [4, 4, 2, 2],
         "f": [[1024], [1024], [512, 512, 512], [512, 512, 512]]},  # layers reversed
    ]
    hashes = {model_hash({**FLEXIBERT_MINI, **change}) for change in changes}
    assert base not in hashes and len(hashes) == len(changes)


def test_hetero_head_order_invariant():
    assert model_hash(HETERO) == model_hash(HETERO_PERMUTED)
    labels1, edges1 = reference_graph(HETERO)
    labels2, edges2 = reference_graph(HETERO_PERMUTED)
    assert labels1 != labels2  # node lists differ, the fingerprints do not
    assert reference_hash(labels1, edges1) == reference_hash(labels2, edges2) == model_hash(HETERO)


def test_hetero_hashes_distinct():
    # moving a head to the other layer, changing a head's op or its parameter changes the hash
    variants = [
        HETERO,
        {**HETERO, "o": [["sa_sdp_64", "sa_wma_64", "l_dct_64", "c_5_64"], ["sa_sdp_32"] * 4]},
        {**HETERO, "o": [["sa_sdp_64", "sa_wma_64", "l_dft_64", "c_9_64"], ["sa_sdp_32"] * 4]},
        {**HETERO, "o": [["sa_sdp_64", "sa_sdp_64", "l_dct_64", "c_9_64"], ["sa_sdp_32"] * 4]},
        {**HETERO, "o": [["sa_sdp_64", "sa_wma_64", "l_dct_64", "c_9_64"], ["sa_sdp_32"] * 3 + ["sa_wma_32"]]},
        {**HETERO, "o": [["sa_sdp_32", "sa_wma_32", "l_dct_32", "c_9_32"], ["sa_sdp_32"] * 4]},  # head size differs
        {**HETERO, "f": [[1024], [512]]},
    ]
    hashes = [model_hash(d) for d in variants]
    assert len(set(hashes)) == len(variants)


def test_hetero_differs_from_standard():
    # the same architecture written in the hetero format: its head labels carry the head size, so the hash differs
    hetero_tiny = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
    assert model_graph(hetero_tiny).edges == model_graph(BERT_TINY).edges
    assert model_hash(hetero_tiny) != BERT_TINY_HASH
    assert model_hash(hetero_tiny) == reference_hash(*reference_graph(hetero_tiny))
