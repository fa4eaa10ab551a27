"""The search loop: a strategy proposes, an executor trains and scores, the journal remembers every decision.

``run_search`` opens (or resumes) a run folder and drives the ``Controller`` until the budget is spent,
the strategy has converged or the library is exhausted. Nothing is decided without being journaled
first, so a controller killed at any moment resumes where it stopped: finished results are kept,
running jobs are adopted, lost or failed jobs are retried a bounded number of times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library, LibraryFileError, load_shared
from flexibert.cluster import create_executor
from flexibert.cluster.base import ENDED, Executor, JobRequest
from flexibert.cluster.slurm import REPO as SLURM_REPO
from flexibert.data.glue import GlueError, get_task, load_tokenized_glue
from flexibert.data.pretraining_corpus import read_preparation
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.benchmarks import BenchmarkError, benchmark_index, is_number
from flexibert.search.job import run_request
from flexibert.search.journal import Candidate, Event, Journal, RunDirError, RunLock, SearchState
from flexibert.search.layout import SCORE_FIELD, RunLayout
from flexibert.search.objectives import Measured, ObjectiveSet
from flexibert.search.report import write_plots, write_scored_library, write_tables
from flexibert.search.settings import (
    SearchError,
    check_training_args,
    fixed_settings,
    job_config,
    job_settings,
    search_config,
)
from flexibert.search.strategies import STRATEGIES, SearchContext, Strategy, random_available
from flexibert.training.glue_score import GlueScoreSettings
from flexibert.training.pretrain import PretrainSettings, load_pretraining_data
from flexibert.training.settings import ConfigurationError
from flexibert.utils.files import write_json_atomic


class Controller:
    """The search loop: ingest finished jobs, resubmit failed ones, propose and submit new ones, until the budget or convergence."""

    def __init__(self, args: argparse.Namespace, run: RunLayout, journal: Journal, state: SearchState, library: Library,
                 strategy: Strategy, executor: Executor):
        self.args, self.layout, self.journal, self.state = args, run, journal, state
        self.library, self.strategy, self.executor = library, strategy, executor
        self.objectives = ObjectiveSet.from_args(args)
        self.stop_reason: str | None = None

    # -- journal helpers ---------------------------------------------------------------------------------------

    def record(self, event: Event, **fields) -> None:
        self.state.apply(self.journal.append(event, **fields))

    # -- ingesting results -------------------------------------------------------------------------------------

    def _read_results(self, model_hash: str) -> dict | None:
        """What the finish event records from the job's results.json; None if there is no valid score."""
        try:
            results = json.loads(self.layout.model(model_hash).results.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        score = results.get(SCORE_FIELD)
        if not isinstance(score, (int, float)) or not np.isfinite(score):
            return None
        values = self.objectives.values_of(results)
        if any(value is None for value in values.values()):
            return None
        return {"score": float(score), "wall_s": results.get("wall_time_s"), "parameters": results.get("parameters"),
                "objectives": values}

    def _attempt_failed(self, candidate: Candidate, reason: str) -> None:
        self.record(Event.ATTEMPT_FAILED, model_hash=candidate.model_hash, reason=reason)
        tries = f"attempt {candidate.failures} of {self.args.max_retries + 1}"
        if candidate.failures > self.args.max_retries:
            self.record(Event.FAIL, model_hash=candidate.model_hash, reason=reason)
            print(f"  {candidate.model_hash[:12]} FAILED ({tries}): {reason}; giving up on it", flush=True)
        else:
            print(f"  {candidate.model_hash[:12]} failed ({tries}): {reason}; will retry", flush=True)

    def ingest(self) -> None:
        """Poll every job in flight and journal what ended."""
        flying = self.state.in_flight()
        for candidate in flying:
            attempt = candidate.open_attempt
            if attempt.job_id is None and (found := self.executor.find(attempt.token)) is not None:
                self.record(Event.LAUNCHED, model_hash=candidate.model_hash, job_id=found)
        known = [c.open_attempt.job_id for c in flying if c.open_attempt.job_id is not None]
        statuses = self.executor.poll(known) if known else {}
        changed = False
        for candidate in flying:
            attempt = candidate.open_attempt
            status = statuses.get(attempt.job_id) if attempt.job_id is not None else None
            if status is not None and status.active:
                continue
            changed = True
            result = self._read_results(candidate.model_hash)
            if result is not None:
                self.record(Event.FINISH, model_hash=candidate.model_hash, **result)
                self._announce_result(candidate)
            elif status is None:
                self._attempt_failed(candidate, "the job was never launched (the controller stopped first)")
            else:
                log = f"; log: {attempt.log}" if attempt.log else ""
                detail = status.detail or status.state
                why = "ended without results.json" if status.state == ENDED else status.state
                self._attempt_failed(candidate, f"{why} ({detail}){log}")
        if changed:
            write_tables(self.layout, self.state, self.library)

    def _announce_result(self, candidate: Candidate) -> None:
        best_hash, best = self.state.best()
        print(f"  {candidate.model_hash[:12]} scored {candidate.score:.2f} ({candidate.method}); best {best:.2f} "
              f"({best_hash[:12]}); {len(self.state.finished)} evaluated", flush=True)

    # -- proposing and submitting ------------------------------------------------------------------------------

    def choose_neighbor(self, model_hash: str, trained: list[str]) -> str | None:
        """The trained library neighbour with the largest weight overlap >= the threshold (ties: the nearer neighbour)."""
        if self.args.no_transfer:
            return None
        trained_set = set(trained)
        target = self.library.model_dict(model_hash)
        best, best_overlap = None, self.args.transfer_threshold
        for neighbor in self.library.neighbors_of(model_hash) or []:
            if neighbor in trained_set:
                overlap = model_overlap(target, self.library.model_dict(neighbor))
                if overlap > best_overlap or (best is None and overlap >= best_overlap):
                    best, best_overlap = neighbor, overlap
        return best

    def propose(self, count: int) -> bool:
        """Journal one round of proposals; False if the library has nothing left to propose."""
        round_index = self.state.rounds
        rng = np.random.default_rng([self.args.seed, round_index])
        values = self.state.objective_values(self.objectives.names)
        scores = self.state.scores()
        if not self.objectives.multi:  # one objective: what a strategy maximises, whichever it is
            scores = {h: v[0] if self.objectives.maximize[0] else -v[0] for h, v in values.items()}
        context = SearchContext(self.library, scores, set(self.state.candidates), self.objectives, values)
        if not context.available.any():  # every allowed model was proposed: a normal end, not a strategy's problem
            return False
        init_left = self.args.num_init - len(self.state.candidates)
        if init_left > 0 or not context.scores:  # more random models while none has a score (e.g. all failed)
            proposals = [(i, "init") for i in random_available(context, min(count, max(init_left, 1)), rng)]
        else:
            proposals = self.strategy.propose(context, count, rng, round_index)
        trained = [h for h in self.state.finished if self.layout.model(h).pretrained.is_dir() or self.args.benchmark_file]
        entries = []
        for index, method in proposals:
            model_hash = self.library.hashes[index]
            entries.append({"model_hash": model_hash, "method": method, "neighbor": self.choose_neighbor(model_hash, trained)})
        if not entries:
            return False
        self.record(Event.ROUND, round=round_index, proposals=entries, strategy_state=self.strategy.state_dict())
        best = self.state.best()
        best_text = f"best {best[1]:.2f} ({best[0][:12]})" if best else "no scores yet"
        methods = ", ".join(sorted({e["method"] for e in entries}))
        print(f"round {round_index} [{methods}]: proposed {', '.join(e['model_hash'][:12] for e in entries)} | {best_text} | "
              f"evaluated {len(self.state.finished)}/{self.args.budget}, in flight {len(self.state.in_flight()) + len(entries)}",
              flush=True)
        return True

    def submit(self, candidate: Candidate) -> None:
        number = len(candidate.attempts) + 1
        log = self.layout.model(candidate.model_hash).log(number)
        token = f"flexibert-{candidate.model_hash[:16]}-a{number}-{time.time_ns()}"
        self.record(Event.SUBMIT, model_hash=candidate.model_hash, attempt=number, token=token, log=str(log))
        request = JobRequest(self.layout.root.resolve(), candidate.model_hash, number, candidate.neighbor, log.resolve(), token)
        job_id = self.executor.submit(request)
        self.record(Event.LAUNCHED, model_hash=candidate.model_hash, job_id=job_id)

    # -- the loop ----------------------------------------------------------------------------------------------

    def stop_requested(self, signum, frame) -> None:
        if self.stop_reason is not None:
            raise KeyboardInterrupt
        self.stop_reason = "interrupted"
        print("\nstopping: the journal is up to date; re-run the same command to resume (interrupt again to stop at once)",
              file=sys.stderr, flush=True)

    def run(self) -> str:
        """Run until the budget is spent (or, with --stop_on_convergence, the strategy has converged) and nothing is in flight."""
        while True:
            self.ingest()
            if self.stop_reason:
                break
            slots = self.args.max_concurrent - len(self.state.in_flight())
            for candidate in self.state.waiting()[: max(slots, 0)]:
                self.submit(candidate)
                slots -= 1
                self.ingest()  # an inline job has already ended
            left = self.args.budget - len(self.state.candidates)
            # Stopping before the budget is the user's choice: by default --budget N evaluates N models.
            converged = self.args.stop_on_convergence and self.strategy.converged and len(self.state.finished) >= self.args.num_init
            busy = self.state.in_flight() or self.state.waiting()
            if (left <= 0 or converged) and not busy:
                return "converged" if converged and left > 0 else "budget"
            # The strategies need scores: wait for the initial models, unless none is left running (all failed).
            can_propose = not converged and (len(self.state.candidates) < self.args.num_init or self.state.finished
                                              or not self.state.in_flight())
            if slots > 0 and left > 0 and can_propose and not self.state.waiting():
                if self.propose(min(slots, left)):
                    continue
                if not self.state.in_flight():
                    return "library exhausted"
            if self.state.in_flight():
                self.executor.pause()
        return self.stop_reason

    def cancel_in_flight(self) -> None:
        flying = [c for c in self.state.in_flight() if c.open_attempt.job_id is not None]
        if not flying:
            return
        if self.executor.cancel_on_stop:
            self.executor.cancel([c.open_attempt.job_id for c in flying])
            for candidate in flying:
                self.record(Event.CANCELLED, model_hash=candidate.model_hash)
            print(f"cancelled {len(flying)} running job(s); they restart from their checkpoints on resume", file=sys.stderr)
        else:
            print(f"{len(flying)} job(s) keep running on {self.executor.name}; a resumed run adopts them", file=sys.stderr)

    def finish(self, reason: str) -> None:
        write_tables(self.layout, self.state, self.library)
        if self.state.finished:
            write_plots(self.layout, self.state, self.library)
            write_scored_library(self.layout, self.state, self.library)
        if reason != "interrupted":
            self.record(Event.STOP, reason=reason)
        if reason == "converged":
            print(f"stopped early: {self.args.strategy} converged after {len(self.state.candidates)} of --budget {self.args.budget} "
                  "models (--stop_on_convergence); the journal records the stop", flush=True)
        best = self.state.best()
        summary = f"best {best[1]:.2f}: {best[0]}" if best else "no model scored"
        print(f"search {'stopped' if reason == 'interrupted' else 'finished'} ({reason}) after {len(self.state.finished)} "
              f"evaluated, {len(self.state.failed())} failed; {summary}\nresults in {self.layout.root}/ (leaderboard.md, "
              "history.csv, report/)", flush=True)


def open_library(path: str) -> Library:
    try:
        library = load_shared(path)
    except LibraryFileError as err:
        raise SearchError(str(err)) from None
    if library.embeddings is None or library.neighbors is None:
        raise SearchError(f"{path} has no embeddings or neighbours; build it with embeddings/generate_library.py")
    return library


def open_run(args: argparse.Namespace, run: RunLayout, journal: Journal) -> SearchState:
    """Start a new run or check that this command continues the one in the run folder."""
    state = SearchState.replay(journal.read())
    config = search_config(args)
    if state.config is not None:
        changed = [name for name in fixed_settings() if state.config.get(name) != config.get(name)]
        if changed:
            details = "; ".join(line for name in changed for line in differences(name, state.config.get(name), config.get(name)))
            raise RunDirError(f"{run.root} holds a search with other settings ({details}); use the original flags to resume it "
                              "or a new --run_dir for a new search")
        print(f"resuming {run.root}: {len(state.finished)} evaluated, {len(state.in_flight())} in flight, "
              f"{len(state.failed())} failed, {state.rounds} rounds", flush=True)
    write_json_atomic(run.job_config, job_config(args))
    state.apply(journal.append(Event.RUN, config=config, argv=sys.argv[1:]))
    return state


def differences(name: str, old: object, new: object) -> list[str]:
    """``name.key: was X, now Y`` for each setting that differs, down to the keys of nested settings (not whole dicts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str) if old.get(key) != new.get(key)
                for line in differences(f"{name}.{key}", old.get(key), new.get(key))]
    return [f"{name}: was {old!r}, now {new!r}"]


def failure_summary(state: SearchState) -> str | None:
    """When no evaluated model has a score but some failed: what went wrong, from the first failure's log (else None)."""
    failed = state.failed()
    if state.finished or not failed:
        return None
    first = failed[0]
    log = Path(first.attempts[-1].log) if first.attempts and first.attempts[-1].log else None
    last_error = _last_error(log) if log is not None and log.is_file() else None
    detail = f"\nthe last error in {log}: {last_error}" if last_error else ""
    return (f"every evaluated model failed ({len(failed)}); no model has a score. The first failure: {first.failed_reason}"
            f"{detail}\nfix the cause, then start again with a new --run_dir (this run records those models as failed)")


def _last_error(log: Path) -> str | None:
    """The last line of a job log that names an error (a traceback's last line), else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or line.lower().startswith("error")]
    return (errors or lines or [None])[-1]


def is_new_run(run: RunLayout) -> bool:
    """Whether the run folder holds no started search (its journal is read without the lock and without repairing it)."""
    return SearchState.replay(Journal(run.root).read(repair=False)).config is None


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
    for objective in objectives.objectives:
        if not isinstance(objective, Measured):
            continue
        if args.benchmark_file:
            lacking = sum(objective.name not in scores for scores in benchmark_index(args.benchmark_file)[0].values())
            if lacking:
                columns = sorted({k for scores in benchmark_index(args.benchmark_file)[0].values() for k in scores})
                raise SearchError(f"--objectives {objective.name}: {lacking} model(s) of {args.benchmark_file} have no such "
                                  f"column (its columns: {', '.join(columns)})")
        elif objective.name not in tasks:
            raise SearchError(f"--objectives {objective.name}: the jobs score the GLUE tasks {' '.join(tasks)} only; name one "
                              "of them, or add it to --glue_tasks")
    if objectives.constraints:
        allowed = int(objectives.feasible(library).sum())
        caps = ", ".join(f"{c.objective.name} <= {c.limit:,.0f}" for c in objectives.constraints)
        if allowed == 0:
            raise SearchError(f"no model of {args.dataset_file} respects {caps}; raise the cap")
        print(f"{allowed} of {len(library)} library models respect {caps}", flush=True)


def run_search(args: argparse.Namespace) -> SearchState:
    """Open (or resume) the run in ``args.run_dir`` and search until done; returns the final state."""
    run = RunLayout(args.run_dir)
    library = open_library(args.dataset_file)
    # Everything the jobs will need is checked before the run folder is written: a refused start leaves no journal behind.
    check_library_hashes(args.dataset_file, library)
    if args.benchmark_file:
        check_benchmark(args.benchmark_file, library, args.benchmark_metric)
    check_objectives(args, library)
    if args.benchmark_file is None and is_new_run(run):
        check_training_inputs(args)
    run.root.mkdir(parents=True, exist_ok=True)
    with RunLock(run.root):
        journal = Journal(run.root)
        state = open_run(args, run, journal)
        strategy = STRATEGIES[args.strategy].from_args(args, run)
        strategy.load_state_dict(state.strategy_state)
        controller = Controller(args, run, journal, state, library, strategy, create_executor(args, run_request))
        previous = {sig: signal.signal(sig, controller.stop_requested) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            reason = controller.run()
            if reason == "interrupted":
                controller.cancel_in_flight()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        controller.finish(reason)
        return state


