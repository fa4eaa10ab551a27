"""The graph library: model dicts with their hashes, embeddings, neighbours and scores, and its JSON file.

The file keeps the original's column layout (one JSON object of parallel lists: ``dataset``,
``design_space``, ``ops_list``, ``num_neighbors``, ``model_dicts``, ``hashes``, ``embeddings``,
``neighbors``, ``performances``) so its files load here and ours load in its tools, plus a
``metadata`` object (format version, layers per stack, hierarchy level, seed, methods, fidelity).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embeddings.design_space import DesignSpace
from embeddings.distance import Dissimilarity, label_ranks
from embeddings.embedding import embed, fidelity
from embeddings.graph import model_graph, model_hash
from embeddings.model_dict import parse_model_dict
from embeddings.neighbors import find_neighbors

FORMAT_VERSION = 1
COLUMNS = ("dataset", "design_space", "ops_list", "num_neighbors", "model_dicts", "hashes", "embeddings", "neighbors", "performances")


class LibraryFileError(ValueError):
    """A library file that is missing, truncated or not a FlexiBERT library."""


@dataclass
class Library:
    """Parallel lists of models; entry i is ``model_dicts[i]``, ``hashes[i]``, ``embeddings[i]``, ..."""

    model_dicts: list[dict]
    hashes: list[str]
    design_space: dict | None = None
    ops_list: list[str] | None = None
    dataset: str | None = None
    embeddings: np.ndarray | None = None
    neighbors: list[list[str]] | None = None
    performances: list[float | None] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.hashes) != len(self.model_dicts):
            raise ValueError(f"{len(self.model_dicts)} model dicts but {len(self.hashes)} hashes")
        if not self.performances:
            self.performances = [None] * len(self.model_dicts)
        if self.ops_list is None:
            self.ops_list = vocabulary(self.model_dicts)
        self._index = {h: i for i, h in enumerate(self.hashes)}

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, model_hash_: str) -> bool:
        return model_hash_ in self._index

    def index(self, model_hash_: str) -> int:
        """Position of a model by hash, O(1)."""
        try:
            return self._index[model_hash_]
        except KeyError:
            raise KeyError(f"model {model_hash_} is not in this library of {len(self)} models") from None

    def model_dict(self, model_hash_: str) -> dict:
        return self.model_dicts[self.index(model_hash_)]

    def neighbors_of(self, model_hash_: str) -> list[str]:
        if self.neighbors is None:
            raise ValueError("this library has no neighbours yet; build them with embeddings/generate_library.py")
        return self.neighbors[self.index(model_hash_)]

    @classmethod
    def from_model_dicts(cls, model_dicts: Iterable[dict], n_jobs: int = 1, **kwargs) -> Library:
        """Validate and hash model dicts; later duplicates (same hash) are dropped with a message."""
        model_dicts = list(model_dicts)
        for position, model_dict in enumerate(model_dicts):
            try:
                parse_model_dict(model_dict)
            except ValueError as err:
                raise ValueError(f"model dict #{position}: {err}") from err
        hashes = hash_all(model_dicts, n_jobs)
        kept_dicts, kept_hashes, seen = [], [], set()
        for model_dict, digest in zip(model_dicts, hashes, strict=True):
            if digest in seen:
                continue
            seen.add(digest)
            kept_dicts.append(model_dict)
            kept_hashes.append(digest)
        dropped = len(model_dicts) - len(kept_dicts)
        if dropped:
            print(f"dropped {dropped} duplicate model dict(s) (same graph hash); {len(kept_dicts)} models remain")
        return cls(model_dicts=kept_dicts, hashes=kept_hashes, **kwargs)

    @classmethod
    def from_design_space(cls, space: DesignSpace, layers_per_stack: int, heterogeneous_ff: bool = False, n_jobs: int = 1) -> Library:
        """Every model of a design space, in the original's enumeration order."""
        total = space.count(layers_per_stack, heterogeneous_ff)
        dicts = list(tqdm(space.enumerate(layers_per_stack, heterogeneous_ff), total=total, desc="enumerating", unit="model"))
        library = cls(model_dicts=dicts, hashes=hash_all(dicts, n_jobs), design_space=space.architecture(), ops_list=space.ops_list())
        library.metadata.update(layers_per_stack=layers_per_stack, heterogeneous_feed_forward=heterogeneous_ff)
        return library

    def dissimilarity(self, labels: Sequence[Sequence[str]] | None = None) -> Dissimilarity:
        """Edit distances between this library's models (label ranks from its op list and the labels in use)."""
        labels = [model_graph(d).labels for d in self.model_dicts] if labels is None else labels
        used = {label for graph_labels in labels for label in graph_labels}
        return Dissimilarity(self.model_dicts, label_ranks(used | set(self.ops_list)))

    def build_embeddings(
        self,
        embedding_size: int = 16,
        algo: str = "MDS",
        num_neighbors: int = 100,
        neighbor_method: str = "biased",
        seed: int = 0,
        distances=None,
    ) -> None:
        """Embed every model and find its neighbours; records the methods and the fidelity in the metadata."""
        labels = [model_graph(d).labels for d in self.model_dicts]
        distances = self.dissimilarity(labels) if distances is None else distances
        self.embeddings = embed(distances, embedding_size, algo, seed)
        found = find_neighbors(labels, self.embeddings, num_neighbors, neighbor_method)
        self.neighbors = [[self.hashes[j] for j in row] for row in found]
        self.metadata.update(
            embedding_method=algo,
            embedding_size=embedding_size,
            neighbor_method=neighbor_method,
            num_neighbors=int(found.shape[1]),
            seed=seed,
            fidelity_spearman=round(fidelity(self.embeddings, distances), 4),
        )

    def to_json(self) -> dict:
        """The file's content: the original's columns in its order, then ``metadata``."""
        return {
            "dataset": self.dataset,
            "design_space": self.design_space,
            "ops_list": self.ops_list,
            "num_neighbors": len(self.neighbors[0]) if self.neighbors else 1,
            "model_dicts": self.model_dicts,
            "hashes": self.hashes,
            "embeddings": self.embeddings.tolist() if self.embeddings is not None else [None] * len(self),
            "neighbors": self.neighbors if self.neighbors is not None else [None] * len(self),
            "performances": self.performances,
            "metadata": {"format_version": FORMAT_VERSION, **self.metadata},
        }

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file beside the target, then a rename (no half-written library)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(self.to_json(), out)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Library:
        """Read a library file (ours or the original's); errors say what is wrong with it."""
        path = Path(path)
        if not path.is_file():
            raise LibraryFileError(f"{path}: no such library file; build one with embeddings/generate_library.py")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LibraryFileError(f"{path}: not valid JSON ({err}); the file may be truncated, rebuild it with --overwrite") from err
        if not isinstance(data, dict) or not {"model_dicts", "hashes"} <= set(data):
            raise LibraryFileError(f"{path}: not a FlexiBERT library (a JSON object with the columns {list(COLUMNS)})")
        count = len(data["model_dicts"])
        for column in ("hashes", "embeddings", "neighbors", "performances"):
            if column in data and len(data[column]) != count:
                raise LibraryFileError(f"{path}: column '{column}' has {len(data[column])} entries, 'model_dicts' has {count}")
        version = data.get("metadata", {}).get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise LibraryFileError(f"{path}: format version {version} is newer than this FlexiBERT reads ({FORMAT_VERSION}); upgrade")
        embeddings = data.get("embeddings") or [None]
        neighbors = data.get("neighbors") or [None]
        return cls(
            model_dicts=data["model_dicts"],
            hashes=data["hashes"],
            design_space=data.get("design_space"),
            ops_list=data.get("ops_list"),
            dataset=data.get("dataset"),
            embeddings=np.asarray(data["embeddings"], dtype=float) if all(e is not None for e in embeddings) and count else None,
            neighbors=data["neighbors"] if all(n is not None for n in neighbors) and count else None,
            performances=list(data.get("performances") or [None] * count),
            metadata=dict(data.get("metadata", {})),
        )


def vocabulary(model_dicts: Sequence[dict]) -> list[str]:
    """Node labels used by some models, in first-seen order (the op list of a library without a design space)."""
    labels: dict[str, None] = {}
    for model_dict in model_dicts:
        labels.update(dict.fromkeys(model_graph(model_dict).labels))
    return list(labels)


def hash_all(model_dicts: Sequence[dict], n_jobs: int = 1) -> list[str]:
    """sha256 graph hashes of many model dicts, in ``n_jobs`` processes when that pays off."""
    if n_jobs > 1 and len(model_dicts) > 2000:
        from multiprocessing import get_context

        with get_context("fork").Pool(n_jobs) as pool:
            chunks = pool.imap(model_hash, model_dicts, chunksize=256)
            return list(tqdm(chunks, total=len(model_dicts), desc="hashing", unit="model"))
    return [model_hash(d) for d in tqdm(model_dicts, desc="hashing", unit="model", disable=len(model_dicts) < 2000)]


@lru_cache(maxsize=2)
def _library(path: str, mtime: float | None) -> Library:
    return Library.load(path)


def load_shared(path: str | Path) -> Library:
    """The library at ``path``, read once per process (and again if the file changes): a search and its inline jobs share it."""
    path = Path(path)
    return _library(str(path.resolve()), path.stat().st_mtime if path.is_file() else None)  # a missing file: Library.load says so
