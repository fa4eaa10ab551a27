"""What a search checks before it starts, in seconds: everything fixed at the start that its jobs will need.

A wrong corpus, tokenizer, GLUE folder, benchmark file or library would otherwise fail every job (and
its retries) after loading or after hours of pretraining. ``run_search`` calls these before the run
folder is written, so a refused start leaves nothing behind; each message names the problem and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library
from flexibert.cluster.slurm import REPO as SLURM_REPO
from flexibert.data.glue import GlueError, get_task, load_tokenized_glue
from flexibert.data.pretraining_corpus import read_preparation
from flexibert.search.benchmarks import BenchmarkError, benchmark_index, is_number
from flexibert.search.journal import Journal
from flexibert.search.layout import RunLayout
from flexibert.search.objectives import Measured, ObjectiveSet
from flexibert.search.settings import SearchError, check_training_args, job_settings, search_config
from flexibert.training.glue_score import GlueScoreSettings
from flexibert.training.pretrain import PretrainSettings, load_pretraining_data
from flexibert.training.settings import ConfigurationError


def is_new_run(run: RunLayout) -> bool:
    """Whether the run folder holds no started search (its journal is read without the lock and without repairing it)."""
    return Journal(run.root).state(repair=False).config is None


HASH_SAMPLE = 200


def check_library_hashes(path: str, library: Library, sample: int = HASH_SAMPLE) -> None:
    """The library's stored hashes are its model dicts' hashes (embeddings.graph.model_hash), which name the models in the
    benchmark, the run folder and the jobs: a library made by another hashing or edited by hand would score or train other
    models than it names. Only a sample is hashed (up to ``sample`` entries evenly spread over the library, the same ones
    every time: well under a second, where all 10,000 would take seconds), so it runs on every start, resumes included."""
    positions = np.unique(np.linspace(0, len(library) - 1, min(sample, len(library))).round().astype(int))
    for position in positions:
        stored, model_dict = library.hashes[position], library.model_dicts[position]
        try:
            actual = compute_model_hash(model_dict)
        except ValueError as err:
            actual = f"none: the model dict is invalid ({err})"
        if actual != stored:
            raise SearchError(f"--dataset_file {path}: entry #{position} stores the hash {stored} but its model dict hashes to "
                              f"{actual} (checked {len(positions)} of {len(library)} entries); the library is stale or was edited: "
                              "rebuild it with embeddings/generate_library.py")


def check_benchmark(path: str, library: Library | None = None, metric: str = "glue") -> None:
    """Read the benchmark file now (a wrong one fails here, not in every job), say once how repeats are scored and, given the
    library, check that it scores every library model (check_benchmark_scores)."""
    if not Path(path).is_file():
        raise SearchError(f"--benchmark_file {path}: no such file")
    try:
        index, repeated = benchmark_index(path)
    except BenchmarkError as err:  # its message starts with the path
        raise SearchError(f"--benchmark_file {err}") from None
    except (ValueError, KeyError) as err:  # e.g. an entry's model dict that is not one
        raise SearchError(f"--benchmark_file {path}: not a benchmark file ({err})") from None
    if repeated:
        print(f"note: {repeated} architecture(s) appear more than once in {path}; their scores are repeated measurements "
              "of one model, and the search sees their mean", flush=True)
    if library is not None:
        check_benchmark_scores(path, index, library, metric)


def check_benchmark_scores(path: str, index: dict[str, dict], library: Library, metric: str) -> None:
    """Every library model has a numeric ``metric`` score in the benchmark, else each of their jobs fails (and is retried)
    and the budget burns on lookups that cannot succeed. A non-finite score (a diverged training) is allowed: that model is
    recorded as failed, as it would be in a training search."""
    missing = [h for h in library.hashes if h not in index]
    if missing:
        raise SearchError(f"--benchmark_file {path} does not score {len(missing)} of the {len(library)} models of --dataset_file "
                          f"(the first: {', '.join(h[:16] for h in missing[:3])}); their jobs would all fail. A benchmark must "
                          "score every model the search can propose: build the library from the benchmark's models "
                          f"(python embeddings/generate_library.py --model_dicts {path} --dataset_file NEW_LIBRARY.json)")
    lacking = [h for h in library.hashes if not is_number(index[h].get(metric))]
    if lacking:
        columns = sorted({name for scores in index.values() for name, value in scores.items() if is_number(value)})
        raise SearchError(f"--benchmark_metric {metric}: {len(lacking)} of the {len(library)} library models have no numeric "
                          f"{metric!r} score in {path} (the first: {lacking[0][:16]}, which has: "
                          f"{', '.join(index[lacking[0]]) or 'nothing'}); its numeric columns: {', '.join(columns) or 'none'}")
    failed = sum(not math.isfinite(index[h][metric]) for h in library.hashes)
    if failed:
        print(f"note: {failed} of the {len(library)} library models have a non-finite {metric!r} score in {path}; the search "
              "records them as failed if it proposes them", flush=True)


def _job_path(args: argparse.Namespace, path: str) -> Path:
    """Where the jobs find ``path``: SLURM jobs run in the repository (sbatch --chdir), the others here."""
    return SLURM_REPO / path if args.executor == "slurm" and not Path(path).is_absolute() else Path(path)


def _where(args: argparse.Namespace, path: str) -> str:
    """For a message on a missing relative path that SLURM jobs would look for in the repository: where, and the fix."""
    found = _job_path(args, path)
    return f" ({found}: SLURM jobs run in {SLURM_REPO}; give an absolute path)" if found != Path(path) else ""


def check_training_inputs(args: argparse.Namespace) -> None:
    """The files every job of a new training search reads, checked in seconds: a wrong one would fail every job (and its
    retries), after loading or after hours of pretraining. Not repeated on a resume: the run was checked when it started."""
    check_training_args(args)
    pretrain, finetune = job_settings(args)
    tokenizer = check_tokenizer(args, pretrain.tokenizer)
    check_corpus(args, pretrain, tokenizer)
    tuning = tokenizer
    if finetune.tokenizer != pretrain.tokenizer:
        tuning = check_tokenizer(args, finetune.tokenizer, "--finetune_args --tokenizer")
    if len(tuning) > len(tokenizer) or tuning.pad_token_id != tokenizer.pad_token_id:
        raise SearchError(f"the fine-tuning tokenizer {finetune.tokenizer} (size {len(tuning)}, pad id {tuning.pad_token_id}) does not "
                          f"fit the models pretrained with {pretrain.tokenizer} (vocab_size {len(tokenizer)}, pad id "
                          f"{tokenizer.pad_token_id}); fine-tune with the pretraining tokenizer")
    check_glue_data(args, finetune, tuning, search_config(args)["tasks"])


def check_tokenizer(args: argparse.Namespace, name: str, flag: str = "--tokenizer") -> PreTrainedTokenizerBase:
    """The jobs' tokenizer folder loads (offline, as AutoTokenizer does in each job) and has the <mask> and <pad> tokens that
    MLM pretraining and batching need; the models' vocab_size is its length, so any tokenizer that loads fits them."""
    save = (f"save one with `python flexibert/save_roberta_tokenizer.py --output_dir {name}` (online) or "
            f"`python flexibert/save_roberta_tokenizer.py --train_files FILE ... --output_dir {name}` (offline)")
    path = _job_path(args, name)
    if not path.is_dir():
        raise SearchError(f"{flag} {name}: no such tokenizer folder{_where(args, name)}; {save}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # OSError, ValueError, the tokenizers library's own errors: all mean "does not load"
        raise SearchError(f"{flag} {name} holds no tokenizer that loads ({type(err).__name__}: "
                          f"{(str(err).splitlines() or [''])[0]}); {save}") from None
    absent = [token for token in ("mask", "pad") if getattr(tokenizer, f"{token}_token") is None]
    if absent:
        raise SearchError(f"{flag} {name} has no {' and no '.join(absent)} token: MLM pretraining masks with <mask> and batches "
                          f"are padded with <pad>; {save}")
    return tokenizer


def check_corpus(args: argparse.Namespace, settings: PretrainSettings, tokenizer: PreTrainedTokenizerBase) -> None:
    """--pretrain_dataset_dir is a prepared corpus of sequences as long as the jobs' --max_seq_length (each job refuses one
    of another length, after loading its model), then whatever else a job checks of it (splits, columns, vocabulary)."""
    folder, length = settings.dataset_dir, settings.max_seq_length
    prepare = (f"python flexibert/prepare_pretrain_dataset.py --tokenizer {settings.tokenizer} --max_seq_length {length} "
               f"--output_dir {folder}")
    path = _job_path(args, folder)
    if not (path / "dataset_dict.json").is_file():
        what = " is not a prepared pretraining corpus (no dataset_dict.json)" if path.is_dir() else ": no such folder"
        what += _where(args, folder)
        raise SearchError(f"--pretrain_dataset_dir {folder}{what}; prepare it with `{prepare} --text_files FILE ...` "
                          "(or --hub_datasets NAME ...)")
    try:
        train = load_from_disk(str(path)).get("train")
    except Exception as err:  # a folder cut short or written by something else: the datasets library raises many kinds
        raise SearchError(f"--pretrain_dataset_dir {folder} does not load ({type(err).__name__}: {err}); prepare it again with "
                          f"`{prepare} --overwrite --text_files FILE ...`") from None
    prepared = read_preparation(path).get("max_seq_length")  # else (prepared elsewhere) the length of its sequences
    if prepared is None and train is not None and len(train) and "input_ids" in train.column_names:
        prepared = len(train[0]["input_ids"])
    if prepared is not None and prepared != length:
        given = any(word.startswith("--max_seq") for word in args.pretrain_args)  # argparse takes abbreviated flags too
        source = "set by --pretrain_args" if given else "pretrain_flexibert.py's default"
        fixed = shlex.join([*_without_flag(args.pretrain_args, "--max_seq_length"), "--max_seq_length", str(prepared)])
        raise SearchError(f"--pretrain_dataset_dir {folder} holds sequences of {prepared} tokens, but the jobs would pretrain with "
                          f"--max_seq_length {length} ({source}): every job would fail. Pass --pretrain_args \"{fixed}\" to train "
                          f"on this corpus, or re-prepare it at {length} tokens: `{prepare} --overwrite --text_files FILE ...`")
    try:
        load_pretraining_data(dataclasses.replace(settings, dataset_dir=str(path)), tokenizer)
    except ConfigurationError as err:  # its message names the corpus and the fix
        raise SearchError(str(err)) from None


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    kept, skip = [], False
    for word in argv:
        if not skip and word != flag and not word.startswith(f"{flag}="):
            kept.append(word)
        skip = word == flag and not skip
    return kept


def check_glue_data(args: argparse.Namespace, settings: GlueScoreSettings, tokenizer: PreTrainedTokenizerBase, tasks: list[str]) -> None:
    """Each task's data is where the jobs will look for it after pretraining: the TSVs of --glue_dir in GLUE's layout (found as
    data/glue.py finds them), or the tokenised tasks of --finetune_args --dataset_dir (loaded as a job loads them). Without
    either the jobs load the tasks from the hub, which is not checked."""
    if settings.dataset_dir:
        for task in tasks:
            try:
                load_tokenized_glue(_job_path(args, settings.dataset_dir), task, tokenizer)
            except GlueError as err:
                raise SearchError(f"--finetune_args --dataset_dir: {err}") from None
        return
    if settings.glue_dir is None:
        return
    root = _job_path(args, settings.glue_dir)
    if not root.is_dir():
        raise SearchError(f"--glue_dir {settings.glue_dir}: no such folder{_where(args, settings.glue_dir)}; give the folder of the "
                          "GLUE TSVs (<TASK>/train.tsv, dev.tsv), or leave --glue_dir out to load the tasks from the hub")
    for task in map(get_task, tasks):
        missing = [f"{task.folder}/{name}" for name in task.files.values() if not (root / task.folder / name).is_file()]
        if missing:
            raise SearchError(f"--glue_dir {settings.glue_dir} lacks task {task.name}'s {', '.join(missing)}; add the task's "
                              f"TSVs there (GLUE layout: {', '.join(f'{task.folder}/{n}' for n in task.files.values())}), or search "
                              "other tasks (--glue_tasks / --task)")


def check_objectives(args: argparse.Namespace, library: Library) -> None:
    """Every objective can be read from what the jobs will write, and the caps leave models to propose (checked in seconds)."""
    objectives = ObjectiveSet.from_args(args)
    tasks = search_config(args)["tasks"]
    index = benchmark_index(args.benchmark_file)[0] if args.benchmark_file else {}
    for objective in objectives.objectives:
        if not isinstance(objective, Measured):
            continue
        if args.benchmark_file:
            lacking = sum(objective.name not in scores for scores in index.values())
            if lacking:
                columns = sorted({k for scores in index.values() for k in scores})
                raise SearchError(f"--objectives {objective.name}: {lacking} model(s) of {args.benchmark_file} have no such "
                                  f"column (its columns: {', '.join(columns)})")
        elif objective.name not in tasks:
            raise SearchError(f"--objectives {objective.name}: the jobs score the GLUE tasks {' '.join(tasks)} only; name one "
                              "of them, or add it to --glue_tasks")
    cheap = objectives.cheap_constraints
    if cheap:
        allowed = int(objectives.feasible(library).sum())
        caps = ", ".join(f"{c.objective.name} <= {c.limit:,.0f}" for c in cheap)
        if allowed == 0:
            raise SearchError(f"no model of {args.dataset_file} respects {caps}; raise the cap")
        print(f"{allowed} of {len(library)} library models respect {caps}", flush=True)
    for cap in objectives.screened:
        print(f"{cap.objective.name} <= {cap.limit:g} ms: each model is measured on this machine before it is proposed "
              "(search/screening.py)", flush=True)
