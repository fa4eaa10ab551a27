"""Architecture graphs of model dicts and their Weisfeiler-Lehman sha256 hash (compatible with the original).

A graph is a node-label list plus directed edges: ``input``, then per layer its head nodes, an
``add_norm``, its feed-forward nodes ``f<width>`` and a second ``add_norm``; finally ``output``.
Edges: the layer's feed node to every head and to the first add_norm (residual), every head to
that add_norm, the feed-forward chain from the first add_norm to the second, the residual between
the two add_norms, and the last add_norm to ``output``.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
import numpy as np
from tqdm.auto import tqdm

from embeddings.model_dict import parse_model_dict

WL_ROUNDS = 5


def head_labels(model_dict: dict) -> list[list[str]]:
    """Per layer, the label of each head node.

    Standard layers: ``<op>_h<hidden>_p-<param>`` (the original's labels, so hashes match its files).
    Hetero heads: ``<type>_h<hidden>_p-<param>_a<head size>``; the head size is part of the label
    because a hetero head's width need not be hidden/heads.
    """
    layers, hetero = parse_model_dict(model_dict)
    if hetero:
        return [[_head_label(head.kind, spec.hidden, head.param, spec.head_size) for head in spec.heads] for spec in layers]
    return [[_head_label(spec.op, spec.hidden, spec.heads[0].param, None)] * spec.num_heads for spec in layers]


@lru_cache(maxsize=65536)
def _head_label(kind: str, hidden: int, param: str | int, head_size: int | None) -> str:
    """One shared string per head label: a million models' label lists then hold references, not copies."""
    return f"{kind}_h{hidden}_p-{param}" + ("" if head_size is None else f"_a{head_size}")


@dataclass(frozen=True)
class Graph:
    labels: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a ``networkx.DiGraph`` with a ``label`` per node (for networkx's edit distances)."""
        graph = nx.DiGraph()
        graph.add_nodes_from((i, {"label": label}) for i, label in enumerate(self.labels))
        graph.add_edges_from(self.edges)
        return graph


def model_graph(model_dict: dict) -> Graph:
    """The graph of a model dict (either format).

    Each layer's nodes and edges follow one pattern given its head and FF counts (``_layer_edges``), laid out so that
    the edges come out in sorted order; the label strings are shared between models.
    """
    labels = ["input"]
    edges: list[tuple[int, int]] = []
    for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
        feed = len(labels) - 1  # input, or the previous layer's second add_norm
        edges += [(feed + a, feed + b) for a, b in _layer_edges(len(heads), len(widths))]
        labels += heads
        labels.append("add_norm")
        labels += _ff_labels(tuple(widths))
        labels.append("add_norm")
    labels.append("output")
    edges.append((len(labels) - 2, len(labels) - 1))
    return Graph(tuple(labels), tuple(edges))


@lru_cache(maxsize=1024)
def _layer_edges(heads: int, widths: int) -> tuple[tuple[int, int], ...]:
    """A layer's edges in sorted order, as offsets from its feed node (0): heads 1..n, A1, FF nodes, A2."""
    norm1, norm2 = heads + 1, heads + widths + 2
    return (*((0, head) for head in range(1, norm1)), (0, norm1), *((head, norm1) for head in range(1, norm1)),
            (norm1, norm1 + 1), (norm1, norm2), *((node, node + 1) for node in range(norm1 + 1, norm2)))


@lru_cache(maxsize=4096)
def _ff_labels(widths: tuple[int, ...]) -> tuple[str, ...]:
    """The FF node labels of a layer, one shared tuple (and strings) per width list."""
    return tuple(f"f{width}" for width in widths)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def graph_hash(graph: Graph) -> str:
    """The original's WL fingerprint: per-node sha256 of (out-degree, in-degree, label), 5 rounds, sorted."""
    count = len(graph.labels)
    ins: list[list[int]] = [[] for _ in range(count)]
    outs: list[list[int]] = [[] for _ in range(count)]
    for src, dst in graph.edges:
        outs[src].append(dst)
        ins[dst].append(src)
    hashes = [_sha256(str((len(outs[v]), len(ins[v]), graph.labels[v]))) for v in range(count)]
    for _ in range(WL_ROUNDS):
        hashes = [
            _sha256("".join(sorted(hashes[w] for w in ins[v])) + "|" + "".join(sorted(hashes[w] for w in outs[v])) + "|" + hashes[v])
            for v in range(count)
        ]
    return _sha256(str(sorted(hashes)))


def model_hash(model_dict: dict) -> str:
    """sha256 fingerprint of a model dict: its identity in libraries, run folders and model folders.

    The same value as ``graph_hash(model_graph(model_dict))``, with fewer sha256 texts to build: nodes with the same
    label and the same neighbours (the heads of a layer that share an operation) have the same WL hash in every
    round, so each such class of nodes is hashed once per round.
    """
    classes = _node_classes(model_dict)
    ins = [[u for u, k in into for _ in range(k)] for _, _, into, _ in classes]
    outs = [[u for u, k in out for _ in range(k)] for _, _, _, out in classes]
    hashes = [_sha256(str((len(out), len(into), label))) for (label, _, _, _), into, out in zip(classes, ins, outs, strict=True)]
    for _ in range(WL_ROUNDS):
        hashes = [_sha256("".join(sorted([hashes[u] for u in into])) + "|" + "".join(sorted([hashes[u] for u in out])) + "|" + own)
                  for own, into, out in zip(hashes, ins, outs, strict=True)]
    return _sha256(str(sorted([digest for digest, (_, count, _, _) in zip(hashes, classes, strict=True) for _ in range(count)])))


def _node_classes(model_dict: dict) -> list[tuple[str, int, list[tuple[int, int]], list[tuple[int, int]]]]:
    """The graph of ``model_graph`` with equal nodes merged: (label, how many nodes, [(in class, edges)], [(out class, edges)]).

    Classes in node order: input; per layer its head classes (one per distinct label), A1, the FF nodes, A2; output.
    """
    classes: list[tuple[str, int, list, list]] = [("input", 1, [], [])]
    feed = 0
    for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
        counts: dict[str, int] = {}
        for label in heads:
            counts[label] = counts.get(label, 0) + 1
        first = len(classes)
        norm1 = first + len(counts)
        classes += [(label, count, [(feed, 1)], [(norm1, 1)]) for label, count in counts.items()]
        classes[feed][3].extend((first + i, count) for i, count in enumerate(counts.values()))
        classes[feed][3].append((norm1, 1))
        norm2 = norm1 + len(widths) + 1
        classes.append(("add_norm", 1, [(feed, 1), *((first + i, count) for i, count in enumerate(counts.values()))],
                        [(norm1 + 1, 1), (norm2, 1)]))
        classes += [(label, 1, [(node - 1, 1)], [(node + 1, 1)]) for node, label in enumerate(_ff_labels(tuple(widths)), norm1 + 1)]
        classes.append(("add_norm", 1, [(norm2 - 1, 1), (norm1, 1)], []))
        feed = norm2
    classes.append(("output", 1, [(feed, 1)], []))
    classes[feed][3].append((len(classes) - 1, 1))
    return classes


def model_hashes(model_dicts: Sequence[dict], workers: int = 1, batch: int = 4096) -> list[str]:
    """``model_hash`` of many models, in ``workers`` processes (about 1.5x less CPU per model than ``model_hash``).

    Standard dicts are hashed a batch at a time by ``_standard_hashes``; hetero dicts one by one. Each worker gets
    its batches pickled rather than reading the caller's dicts after a fork: reading them would copy the caller's
    memory page by page (reference counts), once per worker.
    """
    chunks = [model_dicts[start : start + batch] for start in range(0, len(model_dicts), batch)]
    progress = {"total": len(chunks), "desc": "hashing", "unit": "batch", "disable": len(chunks) < 3}
    if workers > 1 and len(chunks) > 1:
        with multiprocessing.get_context(_START_METHOD).Pool(workers) as pool:
            parts = list(tqdm(pool.imap(_hash_chunk, chunks), **progress))
    else:
        parts = [_hash_chunk(chunk) for chunk in tqdm(chunks, **progress)]
    return [digest for part in parts for digest in part]


_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _hash_chunk(models: Sequence[dict]) -> list[str]:
    """Hashes of some models: standard dicts in one batch, hetero ones (several head labels a layer) one by one."""
    layers = [_layer_types(d) for d in models]
    standard = [i for i, types in enumerate(layers) if types is not None]
    found = dict(zip(standard, _standard_hashes([layers[i] for i in standard]), strict=True))
    return [found[i] if i in found else model_hash(d) for i, d in enumerate(models)]


_LAYER_TYPES: dict[tuple, int] = {}  # (head label, heads, FF widths) -> row of _TYPE_ROWS
_TYPE_ROWS: list[np.ndarray] = []  # per layer type, its node classes (see _layer_rows)
_LABEL_IDS: dict[str, int] = {"input": 0, "output": 1, "add_norm": 2}
_TYPE_ROWS.append(np.array([(0, 1, 0, 0, 1, 2)]))  # input: out to the first layer's heads and A1
_TYPE_ROWS.append(np.array([(1, 1, -1, 0, 0, 0)]))  # output: in from the last A2
_INPUT_TYPE, _OUTPUT_TYPE = 0, 1


def _layer_types(model_dict: dict) -> list[int] | None:
    """The layer types of a standard model (None for a hetero one, whose layers may hold several head labels)."""
    types = []
    for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
        if heads.count(heads[0]) != len(heads):
            return None
        key = (heads[0], len(heads), tuple(widths))
        known = _LAYER_TYPES.get(key)
        if known is None:
            known = _LAYER_TYPES[key] = len(_TYPE_ROWS)
            _TYPE_ROWS.append(_layer_rows(*key))
        types.append(known)
    return types


def _label_id(label: str) -> int:
    return _LABEL_IDS.setdefault(label, len(_LABEL_IDS))


def _layer_rows(head: str, heads: int, widths: tuple[int, ...]) -> np.ndarray:
    """A layer's node classes: (label id, nodes, in-neighbour offsets a and b, out-neighbour offsets a and b).

    Offsets are relative to the class itself (0: none); the classes are the heads (one class: the same label and
    neighbours), A1, the FF nodes and A2, whose out-neighbours (+1, +2) are the next layer's heads and A1.
    """
    k = len(widths)
    rows = [(_label_id(head), heads, -1, 0, 1, 0), (_label_id("add_norm"), 1, -2, -1, 1, k + 1)]
    rows += [(_label_id(f"f{w}"), 1, -1, 0, 1, 0) for w in widths]
    rows.append((_label_id("add_norm"), 1, -1, -(k + 1), 1, 2))
    return np.array(rows, dtype=np.int64)


def _standard_hashes(models: list[list[int]]) -> list[str]:
    """WL hashes of standard models given as layer types, all models at once, round by round, over the node classes
    of ``_node_classes``: the texts are built with numpy, and only the sha256 calls run one by one (in the first two
    rounds once per distinct text, as most repeat across models)."""
    if not models:
        return []
    classes, owner = _assemble(models)
    label, nodes = classes[:, 0], classes[:, 1]
    index = np.arange(len(classes))
    links = [np.where(classes[:, c] != 0, index + classes[:, c], -1) for c in range(2, 6)]  # in a, in b, out a, out b
    counts = [np.where(link >= 0, nodes[link], 0) for link in links]
    out_degree, in_degree = counts[2] + counts[3], counts[0] + counts[1]
    names = {number: name for name, number in _LABEL_IDS.items()}
    width = int(max(out_degree.max(), in_degree.max())) + 1
    unique, inverse = np.unique((label * width + out_degree) * width + in_degree, return_inverse=True)
    texts = [_sha256(str((int(key // width % width), int(key % width), names[int(key // width // width)]))) for key in unique]
    digests = np.frombuffer("".join(texts).encode("ascii"), dtype="S64")[inverse.ravel()]
    for round_ in range(WL_ROUNDS):
        digests = _wl_round(digests, links, counts, dedupe=round_ < 2)
    order = np.lexsort((digests, owner))
    expanded = np.repeat(order, nodes[order])
    items = np.full((len(expanded), 68), ord(","), dtype=np.uint8)  # "'<digest>', " per node: str() of the sorted list
    items[:, 0] = items[:, 65] = ord("'")
    items[:, 1:65] = digests[expanded].view(np.uint8).reshape(-1, 64)
    items[:, 67] = ord(" ")
    flat = items.tobytes()
    ends = np.cumsum(np.bincount(owner[expanded], minlength=len(models))) * 68
    starts = np.concatenate([[0], ends[:-1]])
    return [hashlib.sha256(b"[" + flat[start : end - 2] + b"]").hexdigest() for start, end in zip(starts, ends, strict=True)]


def _assemble(models: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The node classes of all models, one after another (input, the layers' classes, output), and each one's model."""
    sequence = [_INPUT_TYPE, *itertools.chain.from_iterable([*types, _OUTPUT_TYPE, _INPUT_TYPE] for types in models)][:-1]
    sequence = np.array(sequence)
    sizes = np.array([len(rows) for rows in _TYPE_ROWS])[sequence]
    first_rows = np.cumsum([0] + [len(rows) for rows in _TYPE_ROWS[:-1]])[sequence]
    before = np.cumsum(sizes) - sizes
    classes = np.concatenate(_TYPE_ROWS)[np.repeat(first_rows - before, sizes) + np.arange(sizes.sum())]
    outputs = np.flatnonzero(classes[:, 0] == _LABEL_IDS["output"])
    classes[outputs - 1, 5] = 0  # the last A2 feeds output only
    return classes, np.searchsorted(outputs, np.arange(len(classes)))  # a class's model: the outputs before it


def _wl_round(digests: np.ndarray, links: list[np.ndarray], counts: list[np.ndarray], dedupe: bool) -> np.ndarray:
    """One WL round: each class's text is its sorted in-neighbour digests (each once per node), "|", the sorted out-
    neighbour digests, "|", its own digest; classes whose texts have the same layout are built and hashed together."""
    links, counts = list(links), list(counts)
    for a, b in ((0, 1), (2, 3)):  # order each class's two neighbour classes by digest
        swap = (links[b] >= 0) & (digests[np.maximum(links[b], 0)] < digests[np.maximum(links[a], 0)])
        for pair in (links, counts):
            pair[a], pair[b] = np.where(swap, pair[b], pair[a]), np.where(swap, pair[a], pair[b])
    raw = digests.view(np.uint8).reshape(-1, 64)
    base = int(max(c.max() for c in counts)) + 1
    keys, group = np.unique(((counts[0] * base + counts[1]) * base + counts[2]) * base + counts[3], return_inverse=True)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(keys) + 1))
    new = np.empty(len(digests), dtype="S64")
    for number in range(len(keys)):
        members = order[bounds[number] : bounds[number + 1]]
        layout = [int(c[members[0]]) for c in counts]
        width = 64 * (sum(layout) + 1) + 2
        text = np.empty((len(members), width), dtype=np.uint8)
        position = 0
        for part, copies in enumerate(layout):  # in a, in b, "|", out a, out b, "|", own
            if copies:
                text[:, position : position + 64 * copies].reshape(-1, copies, 64)[:] = raw[links[part][members]][:, None]
                position += 64 * copies
            if part in (1, 3):
                text[:, position] = ord("|")
                position += 1
        text[:, position:] = raw[members]
        flat = text.tobytes()
        if dedupe:  # early rounds: most texts repeat across models; hash each distinct one once
            hashed = dict.fromkeys(flat[i : i + width] for i in range(0, len(flat), width))
            for key in hashed:
                hashed[key] = hashlib.sha256(key).hexdigest()
            found = [hashed[flat[i : i + width]] for i in range(0, len(flat), width)]
        else:
            found = [hashlib.sha256(flat[i : i + width]).hexdigest() for i in range(0, len(flat), width)]
        new[members] = np.frombuffer("".join(found).encode("ascii"), dtype="S64")
    return new
