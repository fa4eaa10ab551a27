"""The graph library: model dicts with their hashes, embeddings, neighbours and scores, and its JSON file.

The file keeps the original's column layout (one JSON object of parallel lists: ``dataset``,
``design_space``, ``ops_list``, ``num_neighbors``, ``model_dicts``, ``hashes``, ``embeddings``,
``neighbors``, ``performances``) so its files load here and ours load in its tools, plus a
``metadata`` object (format version, layers per stack, hierarchy level, seed, methods, fidelity).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embeddings.design_space import DesignSpace
from embeddings.distance import Dissimilarity, label_ranks
from embeddings.embedding import embed, fidelity
from embeddings.graph import model_graph, model_hashes
from embeddings.model_dict import parse_model_dict
from embeddings.neighbors import find_neighbors

FORMAT_VERSION = 1
COLUMNS = ("dataset", "design_space", "ops_list", "num_neighbors", "model_dicts", "hashes", "embeddings", "neighbors", "performances")


def _new_file_beside(path: Path) -> tuple[int, Path]:
    """A new temporary file beside ``path``, opened for writing: ``(descriptor, temporary path)``.

    Created with ``os.open(O_EXCL, 0o666)`` so that the kernel applies the umask, as ``open()`` does
    (``tempfile.mkstemp`` makes it 0600, which the rename onto ``path`` would keep). The same as
    flexibert/utils/files.py's ``new_temporary_file``, kept here because importing ``flexibert`` loads
    transformers (seconds) and this package stays light.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name .{path.name}.*.tmp; remove stale ones there")


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
        hashes = model_hashes(model_dicts, n_jobs)
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
        library = cls(model_dicts=dicts, hashes=model_hashes(dicts, n_jobs), design_space=space.architecture(), ops_list=space.ops_list())
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
        """Write atomically: a temporary file beside the target, then a rename (no half-written library).

        The file gets the permissions of the user's umask, as ``open()`` gives (see :func:`_new_file_beside`).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _new_file_beside(path)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self.to_json(), out)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Library:
        """Read a library file (ours or the original's); a LibraryFileError names the file, the field at fault and the fix."""
        path = Path(path)
        data = _read_json(path)
        if not isinstance(data, dict) or not {"model_dicts", "hashes"} <= set(data):
            raise LibraryFileError(f"{path}: not a FlexiBERT library (a JSON object with the columns {list(COLUMNS)})")
        metadata = _checked_metadata(path, data)
        columns = _checked_columns(path, data)
        count = len(columns["model_dicts"])
        embeddings = _checked_embeddings(path, columns["embeddings"]) if count else None
        neighbors = _checked_neighbors(path, columns["neighbors"], columns["hashes"]) if count else None
        for name, kinds, what in (("design_space", dict, "an object"), ("ops_list", list, "an array of op names"),
                                  ("dataset", str, "a GLUE task name")):
            if data.get(name) is not None and not isinstance(data[name], kinds):
                raise LibraryFileError(f"{path}: field '{name}' is {_json_type(data[name])}, not {what} (or null); {REBUILD}")
        if data.get("ops_list") is not None and not all(isinstance(op, str) for op in data["ops_list"]):
            raise LibraryFileError(f"{path}: field 'ops_list' holds something other than op names (strings); {REBUILD}")
        try:
            return cls(
                model_dicts=columns["model_dicts"],
                hashes=columns["hashes"],
                design_space=data.get("design_space"),
                ops_list=data.get("ops_list"),
                dataset=data.get("dataset"),
                embeddings=embeddings,
                neighbors=neighbors,
                performances=list(columns["performances"] or [None] * count),
                metadata=dict(metadata),
            )
        except (ValueError, KeyError, TypeError) as err:  # model dicts that are not architectures (read for the op list)
            raise LibraryFileError(f"{path}: column 'model_dicts' holds a model dict that is not an architecture ({err}); "
                                   f"{REBUILD}") from None

def vocabulary(model_dicts: Sequence[dict]) -> list[str]:
    """Node labels used by some models, in first-seen order (the op list of a library without a design space)."""
    labels: dict[str, None] = {}
    for model_dict in model_dicts:
        labels.update(dict.fromkeys(model_graph(model_dict).labels))
    return list(labels)


REBUILD = "the file was edited, cut short or not written by FlexiBERT: rebuild it with embeddings/generate_library.py --overwrite"
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
               type(None): "null"}


def _json_type(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (``an array``, ``a string``, ...), for error messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _read_json(path: Path) -> object:
    """The parsed content of a library file; a LibraryFileError when it is missing, unreadable, binary or not JSON."""
    if path.is_dir():
        raise LibraryFileError(f"{path}: is a folder, not a library file; give the JSON file built by embeddings/generate_library.py")
    if not path.is_file():
        raise LibraryFileError(f"{path}: no such library file; build one with embeddings/generate_library.py")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise LibraryFileError(f"{path}: cannot read the library file ({err.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LibraryFileError(f"{path}: not a library file: not UTF-8 text at byte offset {err.start} (binary or corrupted content); "
                               "give the JSON file built by embeddings/generate_library.py, or rebuild it with --overwrite") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; so is a number too long to convert
        raise LibraryFileError(f"{path}: not valid JSON ({err}); the file may be truncated, rebuild it with --overwrite") from None


def _checked_metadata(path: Path, data: dict) -> dict:
    """The ``metadata`` object (empty in the original's files), its format version checked."""
    metadata = data.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise LibraryFileError(f"{path}: field 'metadata' is {_json_type(metadata)}, not an object; {REBUILD}")
    version = metadata.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise LibraryFileError(f"{path}: field 'metadata.format_version' is {json.dumps(version)} ({_json_type(version)}), "
                               f"not a whole number >= 1; {REBUILD}")
    if version > FORMAT_VERSION:
        raise LibraryFileError(f"{path}: format version {version} is newer than this FlexiBERT reads ({FORMAT_VERSION}); upgrade")
    return metadata


def _checked_columns(path: Path, data: dict) -> dict[str, list | None]:
    """The per-model columns: lists of one entry per model (the optional ones may be absent or null)."""
    columns: dict[str, list | None] = {}
    for name in ("model_dicts", "hashes", "embeddings", "neighbors", "performances"):
        value = data.get(name)
        if value is None and name not in ("model_dicts", "hashes"):
            columns[name] = None
            continue
        if not isinstance(value, list):
            raise LibraryFileError(f"{path}: column '{name}' is {_json_type(value)}, not an array with one entry per model; {REBUILD}")
        columns[name] = value
    count = len(columns["model_dicts"])
    for name in ("hashes", "embeddings", "neighbors", "performances"):
        if columns[name] is not None and len(columns[name]) != count:
            raise LibraryFileError(f"{path}: column '{name}' has {len(columns[name])} entries, 'model_dicts' has {count}; the columns "
                                   f"must be parallel lists (entry i of each is model i): {REBUILD}")
    _check_entries(path, "model_dicts", columns["model_dicts"], lambda d: isinstance(d, dict), "an object (a model dict)")
    _check_entries(path, "hashes", columns["hashes"], lambda h: isinstance(h, str), "a string (a model hash)")
    if columns["performances"] is not None:
        _check_entries(path, "performances", columns["performances"],
                       lambda p: p is None or (isinstance(p, (int, float)) and not isinstance(p, bool)), "a number or null")
    seen: dict[str, int] = {}
    for position, digest in enumerate(columns["hashes"]):
        if digest in seen:
            raise LibraryFileError(f"{path}: column 'hashes' lists model {digest} twice (entries {seen[digest]} and {position}); "
                                   f"{REBUILD}")
        seen[digest] = position
    return columns


def _check_entries(path: Path, name: str, entries: list, valid, what: str) -> None:
    for position, entry in enumerate(entries):
        if not valid(entry):
            raise LibraryFileError(f"{path}: column '{name}' entry {position} is {_json_type(entry)}, not {what}; {REBUILD}")


def _all_or_none(path: Path, name: str, rows: list | None) -> bool:
    """Whether the column holds a value for every model (False: it is absent or all null, as in a stage-1 file)."""
    if rows is None:
        return False
    missing = [row is None for row in rows]
    if all(missing):
        return False
    if any(missing):
        raise LibraryFileError(f"{path}: column '{name}' is null for entry {missing.index(True)} but not for entry "
                               f"{missing.index(False)}; every model needs one, or none: {REBUILD}")
    return True


def _checked_embeddings(path: Path, rows: list | None) -> np.ndarray | None:
    """The (N, d) embeddings: every row an array of d >= 1 finite numbers."""
    if not _all_or_none(path, "embeddings", rows):
        return None
    _check_entries(path, "embeddings", rows, lambda row: isinstance(row, list), "an array of numbers (an embedding)")
    size = len(rows[0])
    for position, row in enumerate(rows):
        if len(row) != size or not row:
            raise LibraryFileError(f"{path}: column 'embeddings' entry {position} has {len(row)} values but entry 0 has {size}; "
                                   f"every model needs an embedding of the same size (>= 1): {REBUILD}")
    matrix = np.asarray(rows)
    if matrix.dtype.kind not in "iuf":
        raise LibraryFileError(f"{path}: column 'embeddings' holds something other than numbers; {REBUILD}")
    matrix = matrix.astype(float)
    if not np.isfinite(matrix).all():
        position = int(np.argmin(np.isfinite(matrix).all(axis=1)))
        raise LibraryFileError(f"{path}: column 'embeddings' entry {position} holds NaN or infinite values; {REBUILD}")
    return matrix


def _checked_neighbors(path: Path, rows: list | None, hashes: list[str]) -> list[list[str]] | None:
    """Every model's neighbours: an array of hashes of models in the library."""
    if not _all_or_none(path, "neighbors", rows):
        return None
    _check_entries(path, "neighbors", rows, lambda row: isinstance(row, list), "an array of model hashes (its neighbours)")
    try:
        named = set().union(*rows)
    except TypeError:  # an object or array where a hash belongs
        raise LibraryFileError(f"{path}: column 'neighbors' holds something other than model hashes (strings); {REBUILD}") from None
    unknown = named - set(hashes)
    if unknown:
        stranger = next(iter(sorted(unknown, key=str)))
        raise LibraryFileError(f"{path}: column 'neighbors' names {json.dumps(stranger)}, which is not a model hash of this library "
                               f"(column 'hashes'); {REBUILD}")
    return rows

@lru_cache(maxsize=2)
def _library(path: str, mtime: float | None) -> Library:
    return Library.load(path)


def load_shared(path: str | Path) -> Library:
    """The library at ``path``, read once per process (and again if the file changes): a search and its inline jobs share it."""
    path = Path(path)
    return _library(str(path.resolve()), path.stat().st_mtime if path.is_file() else None)  # a missing file: Library.load says so
