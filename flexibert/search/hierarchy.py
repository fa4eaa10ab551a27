"""The hierarchical step as a library: the next, finer library around the best models of a searched one.

The best-scoring models (of a search that optimised one other objective, the best by it; with
``--around front``, the best-scoring of a multi-objective search's Pareto front) are interpolated with
their stored neighbours and with each other at a finer number of layers per stack (embeddings/interpolation.py),
and the candidates become a new library with its own embeddings and neighbours. ``flexibert/hierarchical.py`` is the stage script.

With ``--run_dir`` the scores are the ones the search journaled (``<run_dir>/journal.jsonl``, replayed by
``open_run``): the journal is the run's source of truth, so a model whose ``models/<hash>/results.json`` was
lost or overwritten afterwards keeps its journaled score (with a warning) instead of being dropped.
``--models_dir`` (the original code's layout, which has no journal) reads its ``all_results.json`` files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import sys
from pathlib import Path

from tqdm.auto import tqdm

from embeddings.design_space import GLUE_TASK_NAMES, load_design_space
from embeddings.interpolation import check_layers_per_stack, count_candidates, interpolate
from embeddings.library import Library
from embeddings.library_builder import add_embedding_arguments
from flexibert.search.benchmarks import is_number
from flexibert.search.journal import Journal, RunDirError, SearchState
from flexibert.search.layout import SCORE_FIELD, RunLayout
from flexibert.search.objectives import Score, front_members, objectives_of, ranked


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the next, finer graph library by interpolating between the best trained models of a library "
        "and their neighbours. Scores come from --run_dir, --models_dir, or else the old library's 'performances' column.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--design_space_file", help="design-space YAML stored in the new library; if not given, the old library's")
    parser.add_argument("--old_dataset_file", required=True, help="library the models were searched in (with neighbours)")
    parser.add_argument("--new_dataset_file", help="output library; if not given, <old name>_level<k>.json beside the old one")
    parser.add_argument("--run_dir", help="search run directory; scores are the finished models' scores in its journal "
                                          "(<run_dir>/journal.jsonl)")
    parser.add_argument("--models_dir", help=f"original layout; scores are '{SCORE_FIELD}' in <models_dir>/glue/<hash>/all_results.json")
    parser.add_argument("--dataset", choices=GLUE_TASK_NAMES, help="GLUE task stored in the new library; if not given, the old library's")
    parser.add_argument("--old_layers_per_stack", type=int, default=2, help="layers per stack of the old library")
    parser.add_argument("--new_layers_per_stack", type=int, default=1, help="layers per stack of the new library (divides the old)")
    parser.add_argument("--heterogeneous_feed_forward", action="store_true",
                        help="interpolate FF widths per sub-layer (keeps heterogeneous FF stacks) instead of one width per layer")
    parser.add_argument("--top_models", type=int, default=5, help="best models to interpolate from (the original's TOP_NUM_MODELS)")
    parser.add_argument("--around", choices=("top", "front"), default="top",
                        help="refine around the best scores (of a --run_dir that optimised one other objective, its best "
                             "by that), or around the Pareto front of --run_dir's objectives (its best-scoring --top_models members; "
                             "a single-objective run's front is score against parameters)")
    parser.add_argument("--neighbors_per_model", type=int, default=5, help="stored neighbours of each top model to interpolate with")
    parser.add_argument("--max_candidates_per_pair", type=int, default=10000,
                        help="a pair with more candidates is sampled down to this many (seeded)")
    add_embedding_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of candidate sampling and of the embedding")
    parser.add_argument("--n_jobs", type=int, default=1, help="kept for the original's command lines; unused")
    parser.add_argument("--overwrite", action="store_true", help="replace --new_dataset_file if it exists")
    args = parser.parse_args(argv)
    try:
        check_layers_per_stack(args.old_layers_per_stack, args.new_layers_per_stack)
    except ValueError as err:
        parser.error(str(err))
    if args.around == "front" and not args.run_dir:
        parser.error("--around front reads the front from a search's journal: pass --run_dir")
    for name in ("top_models", "max_candidates_per_pair"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.neighbors_per_model < 0:
        parser.error("--neighbors_per_model must be at least 0")
    return args


def _scores_in(paths: list[Path]) -> dict[str, float]:
    """``{hash: score}`` from ``<hash>/all_results.json`` paths (``--models_dir``); models without a score are left out."""
    scores = {}
    for path in sorted(p for p in paths if p.is_file()):
        try:
            # The original's all_results.json files name the score as a search's results.json files do.
            score = json.loads(path.read_text()).get(SCORE_FIELD)
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            print(f"warning: {path}: unreadable ({err}); skipped", file=sys.stderr)
            continue
        if is_number(score) and math.isfinite(score):
            scores[path.parent.name] = float(score)
    return scores


def open_run(run_dir: str | Path) -> SearchState:
    """The state of a search's run folder, replayed from its journal; a ValueError says what is missing or wrong."""
    journal = Journal(Path(run_dir))
    if not journal.path.is_file():
        raise ValueError(f"{run_dir} is not a search run folder: {journal.path} not found; pass the --run_dir of a "
                         "run_boshnas.py search, or --models_dir for models trained in the original layout")
    try:
        return journal.state(repair=False)  # beside a live search: never cut the line it is writing
    except RunDirError as err:  # the replay names the line and what is wrong with it
        raise ValueError(f"{journal.path} cannot be replayed ({err})") from None


def _journaled_scores(run_dir: str | Path) -> dict[str, float]:
    """``{hash: score}`` of the run's finished models as journaled; a warning names those whose results.json disagrees."""
    run = RunLayout(Path(run_dir))
    scores = open_run(run_dir).scores()
    if not scores:
        raise ValueError(f"{run.journal} records no finished model yet; resume the search (run_boshnas.py --run_dir "
                         f"{run_dir}) until one finishes, or pass another --run_dir")
    disagreeing = []
    for digest, score in scores.items():
        path = run.model(digest).results
        try:
            stored = json.loads(path.read_text()).get(SCORE_FIELD)
        except FileNotFoundError:
            disagreeing.append(f"{digest} (missing)")
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            disagreeing.append(f"{digest} (unreadable)")
            continue
        valid = is_number(stored)
        if not valid or not math.isclose(stored, score, rel_tol=1e-9, abs_tol=1e-12):
            said = repr(stored)
            disagreeing.append(f"{digest} (says {said if len(said) <= 40 else said[:37] + '...'})")
    if disagreeing:
        print(f"warning: keeping the scores journaled in {run.journal} for {len(disagreeing)} model(s) whose results.json "
              f"is missing or disagrees: {', '.join(disagreeing)}", file=sys.stderr)
    return {digest: float(score) for digest, score in scores.items()}


def read_scores(args: argparse.Namespace, library: Library) -> dict[str, float]:
    """Scores of the library's trained models, by hash; an error says where it looked if there are none.

    ``--run_dir``: the finished models' scores in the run's journal (its source of truth; a results.json that is
    missing or disagrees is reported, not trusted). ``--models_dir``: ``<models_dir>/glue/<hash>/all_results.json``.
    Neither: the library's 'performances' column.
    """
    scores: dict[str, float] = {}
    looked = []
    if args.models_dir:
        root = Path(args.models_dir) / "glue"
        scores.update(_scores_in(list(root.glob("*/all_results.json"))))
        looked.append(f"{root}/<hash>/all_results.json")
    if args.run_dir:
        scores.update(_journaled_scores(args.run_dir))
        looked.append(f"the finished models journaled in {RunLayout(Path(args.run_dir)).journal}")
    if not looked:
        scores = {h: float(p) for h, p in zip(library.hashes, library.performances, strict=True) if p is not None}
        looked.append(f"the 'performances' column of {args.old_dataset_file}")
    unknown = [h for h in scores if h not in library]
    if unknown:
        print(f"warning: {len(unknown)} scored model(s) are not in {args.old_dataset_file}, skipped: {', '.join(unknown[:3])}"
              f"{', ...' if len(unknown) > 3 else ''}", file=sys.stderr)
    scores = {h: s for h, s in scores.items() if h in library}
    if not scores:
        raise ValueError(f"no scored models of {args.old_dataset_file} found; looked in {' and '.join(looked)}")
    return scores


def is_homogeneous(model_dict: dict) -> bool:
    """Every layer the same (one value for each of h, n, o, f and p)."""
    return all(model_dict[k].count(model_dict[k][0]) == len(model_dict[k]) for k in ("h", "n", "o", "f", "p") if k in model_dict)


def top_models(scores: dict[str, float], library: Library, count: int) -> list[str]:
    """Best ``count`` models by score; ties go to the earlier model of the library (deterministic)."""
    return sorted(scores, key=lambda h: (-scores[h], library.index(h)))[:count]


def run_top_models(run_dir: str, scores: dict[str, float], library: Library, count: int) -> list[str]:
    """The run's best ``count`` models by what it optimised: its score, or a single other objective's values
    (``--objectives rte`` refines around the best RTE models, ``--objectives time_to_train`` around the fastest)."""
    state = open_run(run_dir)
    headline = objectives_of(state).headline
    if isinstance(headline, Score):
        return top_models(scores, library, count)
    best = [h for h in ranked(state) if h in scores][:count]
    print(f"{run_dir} optimised {headline.name}: refining around its best {len(best)} by {headline.name}")
    return best


def front_models(run_dir: str, scores: dict[str, float], library: Library, count: int) -> list[str]:
    """The best-scoring ``count`` models of the run's Pareto front (its journal says which models and objectives)."""
    front = [h for h in front_members(open_run(run_dir)) if h in scores and h in library]
    if not front:
        raise ValueError(f"{run_dir} has no evaluated model of --old_dataset_file on its front")
    print(f"the front of {run_dir} has {len(front)} model(s); refining around the best {min(count, len(front))}")
    return top_models({h: scores[h] for h in front}, library, count)


def print_summary(scores: dict[str, float], top: list[str], library: Library) -> None:
    homogeneous = sum(is_homogeneous(library.model_dict(h)) for h in scores)
    print(f"{len(scores)} scored models: {homogeneous} homogeneous, {len(scores) - homogeneous} heterogeneous")
    print(f"best model: {top[0]} ({SCORE_FIELD} {scores[top[0]]:.4f}): {json.dumps(library.model_dict(top[0]))}")
    print(f"top {len(top)}:")
    for rank, h in enumerate(top, 1):
        print(f"  {rank}. {h}  {scores[h]:.4f}")


def collect_candidates(library: Library, top: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Interpolate every top model with itself (so it is kept), its first neighbours and the other top models."""
    if args.neighbors_per_model and library.neighbors is None:
        raise ValueError(f"{args.old_dataset_file} has no neighbours; build them with embeddings/generate_library.py "
                         "or pass --neighbors_per_model 0")
    pairs = [(h, h) for h in top]
    if args.neighbors_per_model:
        pairs += [(h, n) for h in top for n in library.neighbors_of(h)[: args.neighbors_per_model]]
    pairs += list(itertools.combinations(top, 2))
    pairs = list(dict.fromkeys(tuple(sorted(pair)) for pair in pairs))  # each unordered pair once (a x b = b x a)
    rng = random.Random(args.seed)
    settings = (args.old_layers_per_stack, args.new_layers_per_stack, args.heterogeneous_feed_forward)
    candidates: dict[str, dict] = {}
    for first, second in tqdm(pairs, desc="interpolating", unit="pair", disable=len(pairs) < 20):
        parents = library.model_dict(first), library.model_dict(second)
        total = count_candidates(*parents, *settings)
        if total > args.max_candidates_per_pair:
            print(f"pair {first[:12]} x {second[:12]}: {total:,} candidates, sampling {args.max_candidates_per_pair:,} (seed {args.seed})")
        found = interpolate(*parents, *settings, max_candidates=args.max_candidates_per_pair, rng=rng)
        for digest, model_dict in found.items():
            candidates.setdefault(digest, model_dict)
    print(f"{len(pairs)} pairs gave {len(candidates):,} distinct candidates")
    return candidates


def default_output(old_file: str, level: int) -> Path:
    """``dataset/x.json`` (level 1) -> ``dataset/x_level2.json``; ``x_level2.json`` -> ``x_level3.json``."""
    old = Path(old_file)
    stem = re.sub(r"_level\d+$", "", old.stem)
    return old.with_name(f"{stem}_level{level}.json")


def best_models(args: argparse.Namespace, scores: dict[str, float], library: Library) -> list[str]:
    """The models to refine around: the best of the run's front, the run's best by what it optimised, or the best scores."""
    if args.around == "front":
        return front_models(args.run_dir, scores, library, args.top_models)
    return run_top_models(args.run_dir, scores, library, args.top_models) if args.run_dir else top_models(scores, library, args.top_models)


def next_level_library(args: argparse.Namespace) -> tuple[Library, Path]:
    """The next, finer library around the best models of ``args.old_dataset_file``, and where it is to be saved."""
    old = Library.load(args.old_dataset_file)
    level = int(old.metadata.get("hierarchy_level", 1)) + 1
    output = Path(args.new_dataset_file) if args.new_dataset_file else default_output(args.old_dataset_file, level)
    if output.resolve() == Path(args.old_dataset_file).resolve():
        raise ValueError("--new_dataset_file must differ from --old_dataset_file")
    if output.exists() and not args.overwrite:
        raise ValueError(f"{output} exists; pass --overwrite to rebuild it")
    stored_lps = old.metadata.get("layers_per_stack")
    if stored_lps is not None and stored_lps != args.old_layers_per_stack:
        print(f"warning: {args.old_dataset_file} was built with {stored_lps} layers per stack, "
              f"but --old_layers_per_stack is {args.old_layers_per_stack}", file=sys.stderr)
    if old.metadata.get("sampled"):
        print(f"{args.old_dataset_file} holds a uniform sample of its design space ({len(old):,} models): "
              "refining around the best models of the sample")
    scores = read_scores(args, old)
    top = best_models(args, scores, old)
    print_summary(scores, top, old)
    candidates = collect_candidates(old, top, args)
    space = load_design_space(args.design_space_file) if args.design_space_file else None
    design = {"design_space": space.architecture(), "ops_list": space.ops_list()} if space else {
        "design_space": old.design_space, "ops_list": old.ops_list}
    new = Library(model_dicts=list(candidates.values()), hashes=list(candidates), dataset=args.dataset or old.dataset, **design)
    new.metadata.update(hierarchy_level=level, layers_per_stack=args.new_layers_per_stack,
                        heterogeneous_feed_forward=args.heterogeneous_feed_forward, parent_library=str(args.old_dataset_file),
                        top_models=top)
    if old.metadata.get("sampled"):  # the parent held a sample of its space: the best of the sample, not of the space
        new.metadata["parent_sampled"] = old.metadata["sampled"]
    new.build_embeddings(args.embedding_size, args.algo, args.num_neighbors, args.neighbor_method, args.seed)
    return new, output
