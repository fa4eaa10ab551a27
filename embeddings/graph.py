"""Architecture graphs of model dicts and their Weisfeiler-Lehman sha256 hash (compatible with the original).

A graph is a node-label list plus directed edges: ``input``, then per layer its head nodes, an
``add_norm``, its feed-forward nodes ``f<width>`` and a second ``add_norm``; finally ``output``.
Edges: the layer's feed node to every head and to the first add_norm (residual), every head to
that add_norm, the feed-forward chain from the first add_norm to the second, the residual between
the two add_norms, and the last add_norm to ``output``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import networkx as nx

from embeddings.model_dict import parse_model_dict

WL_ROUNDS = 5


def head_labels(model_dict: dict) -> list[list[str]]:
    """Per layer, the label of each head node.

    Standard layers: ``<op>_h<hidden>_p-<param>`` (the original's labels, so hashes match its files).
    Hetero heads: ``<type>_h<hidden>_p-<param>_a<head size>``; the head size is part of the label
    because a hetero head's width need not be hidden/heads.
    """
    layers, hetero = parse_model_dict(model_dict)
    labels = []
    for spec in layers:
        suffix = f"_a{spec.head_size}" if hetero else ""
        labels.append([f"{head.kind}_h{spec.hidden}_p-{head.param}{suffix}" for head in spec.heads])
    return labels


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
    """The graph of a model dict (either format)."""
    labels = ["input"]
    edges = []
    feed = 0
    for heads, widths in zip(head_labels(model_dict), model_dict["f"], strict=True):
        first_head = len(labels)
        labels.extend(heads)
        norm1 = len(labels)
        labels.append("add_norm")
        for head in range(first_head, norm1):
            edges += [(feed, head), (head, norm1)]
        edges.append((feed, norm1))
        previous = norm1
        for width in widths:
            labels.append(f"f{width}")
            edges.append((previous, len(labels) - 1))
            previous = len(labels) - 1
        norm2 = len(labels)
        labels.append("add_norm")
        edges += [(previous, norm2), (norm1, norm2)]
        feed = norm2
    labels.append("output")
    edges.append((feed, len(labels) - 1))
    return Graph(tuple(labels), tuple(sorted(edges)))


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
    """sha256 fingerprint of a model dict: its identity in libraries, run folders and model folders."""
    return graph_hash(model_graph(model_dict))
