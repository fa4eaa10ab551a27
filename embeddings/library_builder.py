"""How a graph library is built from flags: the design space (or model dicts), embeddings and neighbours.

Shared by embeddings/generate_library.py and the hierarchical step (flexibert/hierarchical.py), which
build libraries with the same embedding flags.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embeddings.design_space import GLUE_TASK_NAMES, DesignSpace, load_design_space, size_text
from embeddings.distance import ParallelPairs
from embeddings.embedding import EMBEDDING_METHODS, MatrixDistances
from embeddings.graph import model_hashes
from embeddings.library import Library
from embeddings.neighbors import NEIGHBOR_METHODS

KERNELS = ("GraphEditDistance",)
MAX_LIBRARY_MODELS = 1_000_000
"""Most models a library is built with unless ``--max_models`` says otherwise. Measured with benchmarks/library_speed.py
--spaces --sample 1000000 (the full space at lps 1, --n_jobs 2): peak 5.5 GiB over all processes, 834 CPU seconds
(542 s wall on 2 idle cores, 858 s with the cores shared), a 6.9 GiB file.
An enumerated space holds its models the same way, so this many fit a machine with 8 GB."""


def at_least(minimum: int):
    """An argparse ``type``: a whole number >= ``minimum`` (argparse turns a refusal into its one-line error, naming the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def add_embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the dissimilarity, embedding and neighbours, shared with flexibert/hierarchical.py."""
    parser.add_argument("--kernel", default="GraphEditDistance", choices=KERNELS,
                        help="dissimilarity: the original's edit-cost model, as the cost of a near-optimal edit path (>= exact GED)")
    parser.add_argument("--algo", default="MDS", choices=EMBEDDING_METHODS,
                        help="MDS: landmark MDS; GD: landmark MDS refined by gradient descent on sampled pairs (no better measured)")
    parser.add_argument("--embedding_size", type=at_least(1), default=16, help="embedding dimension (at least 1)")
    parser.add_argument("--num_neighbors", type=at_least(1), default=100,
                        help="neighbours stored per model (at least 1; clipped to N-1)")
    parser.add_argument("--neighbor_method", default="biased", choices=NEIGHBOR_METHODS,
                        help="biased: longest shared layer prefix first, then embedding distance; distance: embedding distance")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build a FlexiBERT graph library (model dicts, hashes, embeddings, neighbours) as one JSON file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--design_space_file", help="design-space YAML (e.g. design_space/design_space_test.yaml); "
                        "optional with --model_dicts, where it only adds the op vocabulary")
    parser.add_argument("--model_dicts", help="JSON file with an explicit list of model dicts, or {'entries': [{'model_dict': ...}]}, "
                        "instead of enumerating the design space")
    parser.add_argument("--dataset_file", help="output library JSON (default: dataset/<name of the YAML or JSON>.json)")
    parser.add_argument("--dataset", choices=GLUE_TASK_NAMES, help="GLUE task the library is for (stored in the file)")
    parser.add_argument("--layers_per_stack", type=at_least(1), default=2, help="consecutive layers that share all choices")
    parser.add_argument("--sample", type=at_least(1), metavar="N",
                        help="build the library from N distinct models drawn uniformly from the design space (seeded by --seed), "
                             "without enumerating it: for spaces too large to enumerate; N >= the space's size enumerates it")
    parser.add_argument("--max_models", type=at_least(1), default=MAX_LIBRARY_MODELS, metavar="M",
                        help="refuse to build a library of more than M models (a larger space needs --sample); a million "
                             "models take about 5.5 GB and 14 CPU minutes (with --n_jobs 2, 9 min on 2 idle cores)")
    parser.add_argument("--heterogeneous_feed_forward", action="store_true", help="every FF sub-layer picks its own width")
    add_embedding_arguments(parser)
    parser.add_argument("--diss_mat_file", help="precomputed N x N dissimilarity matrix (.npy) in library order, instead of --kernel")
    parser.add_argument("--seed", type=at_least(0), default=0,
                        help="seed of --sample, landmarks and gradient descent (same seed, same file)")
    parser.add_argument("--n_jobs", type=at_least(1), default=1, help="processes for hashing and edit distances")
    parser.add_argument("--overwrite", action="store_true", help="replace --dataset_file if it exists")
    args = parser.parse_args(argv)
    if not args.design_space_file and not args.model_dicts:
        parser.error("give --design_space_file (enumerate a design space) or --model_dicts (an explicit list)")
    if args.sample and args.model_dicts:
        parser.error("--sample draws models from --design_space_file; leave it out with --model_dicts (an explicit list)")
    if args.dataset_file is None:
        args.dataset_file = str(Path("dataset") / f"{Path(args.model_dicts or args.design_space_file).stem}.json")
    problem = output_problem(Path(args.dataset_file))
    if problem:
        parser.error(f"--dataset_file {args.dataset_file}: {problem}")
    if args.diss_mat_file and not Path(args.diss_mat_file).is_file():
        what = "is a folder" if Path(args.diss_mat_file).is_dir() else "no such file"
        parser.error(f"--diss_mat_file {args.diss_mat_file}: {what}; give the N x N dissimilarity matrix saved with numpy.save "
                     "(.npy), or leave the flag out to compute the distances")
    return args


def output_problem(path: Path) -> str | None:
    """Why a library cannot be written at ``path`` (a folder, or under a file), else None; checked before any work."""
    if path.is_dir():
        return f"is a folder; give a file name for the library, e.g. {path / 'library.json'}"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a folder; choose another output path"
    return None


def read_model_dicts(path: str) -> list[dict]:
    """A JSON list of model dicts, or ``{"entries": [{"model_dict": ...}, ...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read model dicts: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("entries"), list):
        data = [entry.get("model_dict") if isinstance(entry, dict) else None for entry in data["entries"]]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{path}: expected a non-empty JSON list of model dicts or {{'entries': [{{'model_dict': ...}}, ...]}}")
    return data


def build(args: argparse.Namespace) -> Library:
    """The library's models and hashes (no embeddings yet): from --model_dicts, or the design space, whole or sampled."""
    space = load_design_space(args.design_space_file) if args.design_space_file else None
    if args.model_dicts:
        extra = {"design_space": space.architecture(), "ops_list": space.ops_list()} if space else {}
        library = Library.from_model_dicts(read_model_dicts(args.model_dicts), n_jobs=args.n_jobs, **extra)
        library.metadata.update(source=str(args.model_dicts))
    else:
        library = space_library(space, args)
    library.dataset = args.dataset
    library.metadata.setdefault("hierarchy_level", 1)
    return library


def space_library(space: DesignSpace, args: argparse.Namespace) -> Library:
    """Every model of the space, or ``--sample`` of them; a ValueError (one line, before any work) if too many."""
    lps, heterogeneous_ff = args.layers_per_stack, args.heterogeneous_feed_forward
    size = space.count(lps, heterogeneous_ff)
    check_size(space, args, size)
    sample = args.sample if args.sample and args.sample < size else None
    print(f"{args.design_space_file}: {size_text(size)} models at --layers_per_stack {lps}")
    if sample is None:
        if args.sample:
            print(f"--sample {args.sample:,} is not below the space's {size_text(size)} models: enumerating all of them instead")
        dicts = list(tqdm(space.enumerate(lps, heterogeneous_ff), total=size, desc="enumerating", unit="model", disable=size < 10_000))
    else:
        print(f"sampling {sample:,} of them uniformly (seed {args.seed})")
        dicts = space.sample(sample, lps, heterogeneous_ff, args.seed)
    hashes = model_hashes(dicts, args.n_jobs)
    print(f"all {len(hashes):,} graph hashes are unique" if len(set(hashes)) == len(hashes) else "duplicate hashes found")
    library = Library(model_dicts=dicts, hashes=hashes, design_space=space.architecture(), ops_list=space.ops_list())
    library.metadata.update(layers_per_stack=lps, heterogeneous_feed_forward=heterogeneous_ff, space_size=size)
    if sample is not None:
        library.metadata["sampled"] = {"models": sample, "seed": args.seed, "space_size": size}
    return library


def check_size(space: DesignSpace, args: argparse.Namespace, size: int) -> None:
    """Refuse a library of more than --max_models models, saying how large it is and what to do instead."""
    limit = args.max_models
    if min(size, args.sample or size) <= limit:
        return
    if args.sample:
        raise ValueError(f"--sample {args.sample:,} is more than --max_models {limit:,} (a million models need about 5.5 GB and "
                         f"14 CPU minutes); sample fewer models, or raise --max_models if this machine has the memory and time")
    coarser = [(lps, space.count(lps, args.heterogeneous_feed_forward)) for lps in range(args.layers_per_stack + 1,
                                                                                       max(space.encoder_layers) + 1)
               if all(depth % lps == 0 for depth in space.encoder_layers)]
    fitting = [f"a larger --layers_per_stack ({lps}: {count:,} models)" for lps, count in coarser if count <= limit]
    options = [f"--sample N to build a uniform sample of N of them (e.g. --sample {min(limit, 100_000)})", *fitting[:1],
               "a smaller design space"]
    raise ValueError(f"{args.design_space_file} has {size_text(size)} models at --layers_per_stack {args.layers_per_stack}, "
                     f"more than --max_models {limit:,} to enumerate; use {', '.join(options[:-1])}, or {options[-1]}")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a library is built: its million small dicts and lists hold no cycles, and
    the collector's passes over them would double the time of building and saving it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_library(args: argparse.Namespace) -> Library:
    """The library of ``args`` with its embeddings and neighbours (dissimilarities from --diss_mat_file when given)."""
    distances = read_dissimilarities(args.diss_mat_file) if args.diss_mat_file else None  # a bad file fails before any work
    with gc_paused():
        library = build(args)
        if distances is not None:
            if len(distances) != len(library):
                size = len(distances)
                raise ValueError(f"{args.diss_mat_file}: matrix is {size} x {size} but the library has {len(library)} models")
            library.build_embeddings(args.embedding_size, args.algo, args.num_neighbors, args.neighbor_method, args.seed, distances)
            return library
        # a design space's op list holds every label its models use, so the edit-cost ranks need no pass over the models
        edit_distances = library.dissimilarity(labels=None if args.model_dicts else [])
        with ParallelPairs(edit_distances, args.n_jobs) as distances:
            library.build_embeddings(args.embedding_size, args.algo, args.num_neighbors, args.neighbor_method, args.seed, distances)
    return library


def read_dissimilarities(path: str) -> MatrixDistances:
    """The square matrix of finite, non-negative dissimilarities in ``path`` (a .npy file); a ValueError says what is wrong."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # neither .npy nor .npz: numpy would call it pickled data
            raise ValueError("it does not start with numpy's .npy header")
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"--diss_mat_file {path}: not a matrix saved with numpy.save ({err})") from None
    if not isinstance(matrix, np.ndarray):  # an .npz archive
        matrix.close()
        raise ValueError(f"--diss_mat_file {path}: an .npz archive, not one matrix; save the N x N matrix alone with numpy.save")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not matrix.size:
        raise ValueError(f"--diss_mat_file {path}: a dissimilarity matrix must be N x N, got shape {matrix.shape}")
    if matrix.dtype.kind not in "iuf":
        raise ValueError(f"--diss_mat_file {path}: holds {matrix.dtype} values, not numbers")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError(f"--diss_mat_file {path}: holds NaN, infinite or negative dissimilarities")
    return MatrixDistances(matrix.astype(float, copy=False))
