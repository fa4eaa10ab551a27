"""Search a graph library for the best architecture: BOSHNAS (or a baseline) proposes, an executor trains, the journal remembers.

    python flexibert/run_boshnas.py --dataset_file dataset/dataset_test.json --run_dir runs/test \\
        --tokenizer roberta_tokenizer --pretrain_dataset_dir tokenized_pretraining_dataset --glue_dir GLUE_data
    python -m flexibert.run_boshnas --dataset_file LIB.json --benchmark_file BENCH.json --executor inline \\
        --strategy evolution --budget 50 --run_dir runs/evolution_seed1 --seed 1

Each candidate's job (flexibert/candidate_job.py) pretrains it with MLM, warm-started by weight
transfer from its trained library neighbour with the largest overlap (at least --transfer_threshold;
then only --transfer_pretrain_steps steps), fine-tunes it on the GLUE task(s) and writes
<run_dir>/models/<hash>/results.json. With --benchmark_file the job looks the score up instead.

Everything is in --run_dir: journal.jsonl (every decision, append-only), job_config.json, models/,
history.csv, leaderboard.csv/.md, report/*.png, library_scored.json and the surrogate checkpoints.
Re-running the same command resumes: finished results are kept, running jobs are adopted and waited
for, lost or failed jobs are retried up to --max_retries times, then recorded as failed. Ctrl-C stops
cleanly (press it twice to stop at once); a later run goes on from there. --budget may be raised on
a resume; the settings that decide what is proposed or how models are trained may not.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np

from embeddings.library import Library, LibraryFileError
from flexibert.cluster import add_executor_arguments, create_executor
from flexibert.cluster.base import ENDED, JobRequest
from flexibert.data.glue import GLUE_TASKS
from flexibert.data.glue_metrics import DEFAULT_TASKS
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.job import JOB_CONFIG_FILE, RESULTS_FILE, SCORE_KEY, load_library, model_dir, run_request
from flexibert.search.journal import Candidate, Journal, RunDirError, RunLock, SearchState
from flexibert.search.report import write_plots, write_scored_library, write_tables
from flexibert.search.strategies import (
    STRATEGIES,
    Boshnas,
    BoshnasSettings,
    GaussianProcessBO,
    RandomSearch,
    RegularizedEvolution,
    SearchContext,
    random_available,
)
from flexibert.training.glue_score import parse_args as glue_parse_args
from flexibert.training.pretrain import parse_args as pretrain_parse_args
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import write_json_atomic

# Settings a resumed run must share with the run it continues: they decide what is proposed and how models are scored.
FIXED_SETTINGS = ("dataset_file", "strategy", "seed", "num_init", "tasks", "benchmark_file", "benchmark_metric",
                  "transfer_threshold", "no_transfer", "boshnas", "evolution", "job")


class SearchError(RuntimeError):
    """A problem with the search's settings or inputs that the user can fix."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    search = parser.add_argument_group("search")
    search.add_argument("--dataset_file", required=True, help="graph library JSON (embeddings/generate_library.py)")
    search.add_argument("--run_dir", help="folder for everything the run writes (default: runs/<strategy>_<task>_seed<seed>)")
    search.add_argument("--task", default="glue", choices=("glue", *GLUE_TASKS),
                        help="score models by the GLUE score over --glue_tasks, or by one task's dev score")
    search.add_argument("--glue_tasks", nargs="+", default=list(DEFAULT_TASKS), metavar="TASK",
                        help="tasks averaged into the GLUE score when --task glue")
    search.add_argument("--strategy", choices=STRATEGIES, default="boshnas", help="how the next models are chosen")
    search.add_argument("--num_init", type=int, default=10, help="random models evaluated before the strategy takes over")
    search.add_argument("--budget", type=int, default=50, help="models to evaluate in all (failed ones count)")
    search.add_argument("--max_concurrent", type=int, default=1, help="jobs in flight at once")
    search.add_argument("--seed", type=int, default=1, help="seed of every random choice of the search (recorded)")
    search.add_argument("--max_retries", type=int, default=2, help="re-runs of a failed or lost job before the model is recorded as failed")
    search.add_argument("--benchmark_file",
                        help='look scores up in {"entries": [{"model_dict": ..., "scores": {...}}]} instead of training')
    search.add_argument("--benchmark_metric", default="glue", help="which score of --benchmark_file (0-100)")

    add_executor_arguments(parser)

    transfer = parser.add_argument_group("knowledge transfer")
    transfer.add_argument("--transfer_threshold", type=float, default=0.8,
                          help="warm-start from the trained neighbour with the largest weight overlap, if at least this")
    transfer.add_argument("--transfer_pretrain_steps", type=int,
                          help="pretraining steps after a warm start (default: a tenth of --pretrain_steps, at least 1)")
    transfer.add_argument("--transfer_mode", choices=("RP", "OD"), default="RP",
                          help="weight transfer: random projection or ordered slicing")
    transfer.add_argument("--no_transfer", action="store_true", help="always pretrain from scratch")

    train = parser.add_argument_group("training (passed to each job; see pretrain_flexibert.py and glue_score.py --help)")
    train.add_argument("--pretrain_steps", type=int, default=100_000, help="pretraining steps from scratch (the paper's)")
    train.add_argument("--tokenizer", default="roberta_tokenizer", help="tokenizer folder used for pretraining and fine-tuning")
    train.add_argument("--pretrain_dataset_dir", default="tokenized_pretraining_dataset", help="prepare_pretrain_dataset.py's output")
    train.add_argument("--glue_dir", help="GLUE TSV folder (default: the hub)")
    train.add_argument("--pretrain_args", default="",
                       help='more pretrain_flexibert.py flags, e.g. "--learning_rate 1e-3 --max_seq_length 128"')
    train.add_argument("--finetune_args", default="", help='more glue_score.py flags, e.g. "--num_train_epochs 1 --max_train_samples 2000"')

    bo = parser.add_argument_group("BOSHNAS (--strategy boshnas)")
    defaults = BoshnasSettings()
    bo.add_argument("--k1", type=float, default=defaults.k1, help="UCB weight of the epistemic standard deviation")
    bo.add_argument("--k2", type=float, default=defaults.k2, help="UCB weight of the aleatoric standard deviation (patience phase)")
    bo.add_argument("--gobi_restarts", type=int, default=defaults.restarts, help="GOBI start points per optimisation round")
    bo.add_argument("--first_order", action="store_true", help="GOBI with SGD instead of AdaHessian")
    bo.add_argument("--prob_uncertainty", type=float, default=defaults.prob_uncertainty,
                    help="chance a round samples the most uncertain model")
    bo.add_argument("--prob_random", type=float, default=defaults.prob_random, help="chance a round samples a random model")
    bo.add_argument("--patience", type=int, default=defaults.patience,
                    help="optimisation rounds without progress before adding aleatoric uncertainty")
    bo.add_argument("--aleatoric_rounds", type=int, default=defaults.aleatoric_rounds,
                    help="more such rounds before the search stops (converged)")
    bo.add_argument("--convergence_tol", type=float, default=defaults.tolerance, help="score gain that counts as progress")
    bo.add_argument("--surrogate_epochs", type=int, default=defaults.surrogate_epochs, help="maximum epochs per surrogate fit")

    evo = parser.add_argument_group("regularised evolution (--strategy evolution)")
    evo.add_argument("--population_size", type=int, default=10, help="the youngest models that form the population")
    evo.add_argument("--tournament_size", type=int, default=3, help="models sampled per tournament")

    args = parser.parse_args(argv)
    if args.transfer_pretrain_steps is None:
        args.transfer_pretrain_steps = max(1, args.pretrain_steps // 10)
    elif args.transfer_pretrain_steps > args.pretrain_steps:
        parser.error(f"--transfer_pretrain_steps {args.transfer_pretrain_steps:,} is more than --pretrain_steps "
                     f"{args.pretrain_steps:,}: a warm-started model should train fewer steps than one from scratch; lower it")
    for name in ("num_init", "budget", "max_concurrent", "pretrain_steps", "transfer_pretrain_steps", "gobi_restarts",
                 "population_size", "tournament_size", "surrogate_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.max_retries < 0:
        parser.error("--max_retries must be at least 0")
    if not 0 <= args.prob_uncertainty + args.prob_random <= 1 or min(args.prob_uncertainty, args.prob_random) < 0:
        parser.error("--prob_uncertainty and --prob_random must be probabilities that sum to at most 1")
    for name in ("pretrain_args", "finetune_args"):
        try:
            setattr(args, name, shlex.split(getattr(args, name)))
        except ValueError as err:
            parser.error(f"--{name}: {err}")
    if args.run_dir is None:
        args.run_dir = f"runs/{args.strategy}_{args.task}_seed{args.seed}"
    return args


def check_training_args(args: argparse.Namespace) -> None:
    """Parse the flags each job will get now, so a typo fails here and not in every job."""
    for name, parse, argv in (("--pretrain_args", pretrain_parse_args, ["--model_dict", "{}", *job_pretrain_args(args)]),
                              ("--finetune_args", glue_parse_args, ["--model_name_or_path", "x", "--output_dir", "x",
                                                                    *job_finetune_args(args)])):
        try:
            parse(argv)
        except SystemExit as err:
            raise SearchError(f"{name} holds flags that the job's script rejects (its message is above)") from err


def job_pretrain_args(args: argparse.Namespace) -> list[str]:
    return ["--tokenizer", args.tokenizer, "--dataset_dir", args.pretrain_dataset_dir, *args.pretrain_args]


def job_finetune_args(args: argparse.Namespace) -> list[str]:
    return [*(["--glue_dir", args.glue_dir] if args.glue_dir else []), "--tokenizer", args.tokenizer, *args.finetune_args]


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def search_config(args: argparse.Namespace) -> dict:
    """The run's settings as recorded in the journal; FIXED_SETTINGS must match on a resume."""
    tasks = list(args.glue_tasks) if args.task == "glue" else [args.task]
    return {
        "dataset_file": _absolute(args.dataset_file), "strategy": args.strategy, "seed": args.seed, "num_init": args.num_init,
        "tasks": tasks, "benchmark_file": _absolute(args.benchmark_file), "benchmark_metric": args.benchmark_metric,
        "transfer_threshold": args.transfer_threshold, "no_transfer": args.no_transfer,
        "boshnas": vars(boshnas_settings(args)) if args.strategy == "boshnas" else None,
        "evolution": [args.population_size, args.tournament_size] if args.strategy == "evolution" else None,
        "job": None if args.benchmark_file else job_config(args),
        "budget": args.budget, "max_concurrent": args.max_concurrent, "executor": args.executor, "max_retries": args.max_retries,
    }


def job_config(args: argparse.Namespace) -> dict:
    """What every job of the run reads (job_config.json)."""
    return {
        "library": _absolute(args.dataset_file), "tasks": list(args.glue_tasks) if args.task == "glue" else [args.task],
        "benchmark_file": _absolute(args.benchmark_file), "benchmark_metric": args.benchmark_metric,
        "pretrain_steps": args.pretrain_steps, "transfer_pretrain_steps": args.transfer_pretrain_steps,
        "transfer_mode": args.transfer_mode, "pretrain_args": job_pretrain_args(args), "finetune_args": job_finetune_args(args),
    }


def boshnas_settings(args: argparse.Namespace) -> BoshnasSettings:
    return BoshnasSettings(k1=args.k1, k2=args.k2, restarts=args.gobi_restarts, second_order=not args.first_order,
                           prob_uncertainty=args.prob_uncertainty, prob_random=args.prob_random, patience=args.patience,
                           aleatoric_rounds=args.aleatoric_rounds, tolerance=args.convergence_tol,
                           surrogate_epochs=args.surrogate_epochs, seed=args.seed)


def make_strategy(args: argparse.Namespace, run_dir: Path):
    if args.strategy == "boshnas":
        return Boshnas(boshnas_settings(args), run_dir)
    if args.strategy == "evolution":
        return RegularizedEvolution(args.population_size, args.tournament_size)
    if args.strategy == "gp":
        return GaussianProcessBO(seed=args.seed)
    return RandomSearch()


class Controller:
    """The search loop: ingest finished jobs, resubmit failed ones, propose and submit new ones, until the budget or convergence."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, journal: Journal, state: SearchState, library: Library,
                 strategy, executor):
        self.args, self.run_dir, self.journal, self.state = args, run_dir, journal, state
        self.library, self.strategy, self.executor = library, strategy, executor
        self.stop_reason: str | None = None

    # -- journal helpers ---------------------------------------------------------------------------------------

    def record(self, event: str, **fields) -> None:
        self.state.apply(self.journal.append(event, **fields))

    # -- ingesting results -------------------------------------------------------------------------------------

    def _read_results(self, model_hash: str) -> dict | None:
        """What the finish event records from the job's results.json; None if there is no valid score."""
        path = model_dir(self.run_dir, model_hash) / RESULTS_FILE
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        score = results.get(SCORE_KEY)
        if not isinstance(score, (int, float)) or not np.isfinite(score):
            return None
        return {"score": float(score), "wall_s": results.get("wall_time_s"), "parameters": results.get("parameters")}

    def _attempt_failed(self, candidate: Candidate, reason: str) -> None:
        self.record("attempt_failed", model_hash=candidate.model_hash, reason=reason)
        tries = f"attempt {candidate.failures} of {self.args.max_retries + 1}"
        if candidate.failures > self.args.max_retries:
            self.record("fail", model_hash=candidate.model_hash, reason=reason)
            print(f"  {candidate.model_hash[:12]} FAILED ({tries}): {reason}; giving up on it", flush=True)
        else:
            print(f"  {candidate.model_hash[:12]} failed ({tries}): {reason}; will retry", flush=True)

    def ingest(self) -> None:
        """Poll every job in flight and journal what ended."""
        flying = self.state.in_flight()
        for candidate in flying:
            attempt = candidate.in_flight
            if attempt.job_id is None and (found := self.executor.find(attempt.token)) is not None:
                self.record("launched", model_hash=candidate.model_hash, job_id=found)
        known = [c.in_flight.job_id for c in flying if c.in_flight.job_id is not None]
        statuses = self.executor.poll(known) if known else {}
        changed = False
        for candidate in flying:
            attempt = candidate.in_flight
            status = statuses.get(attempt.job_id) if attempt.job_id is not None else None
            if status is not None and status.active:
                continue
            changed = True
            result = self._read_results(candidate.model_hash)
            if result is not None:
                self.record("finish", model_hash=candidate.model_hash, **result)
                self._announce_result(candidate)
            elif status is None:
                self._attempt_failed(candidate, "the job was never launched (the controller stopped first)")
            else:
                log = f"; log: {attempt.log}" if attempt.log else ""
                detail = status.detail or status.state
                why = "ended without results.json" if status.state == ENDED else status.state
                self._attempt_failed(candidate, f"{why} ({detail}){log}")
        if changed:
            write_tables(self.run_dir, self.state, self.library)

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
        context = SearchContext(self.library, self.state.scores(), set(self.state.candidates))
        init_left = self.args.num_init - len(self.state.candidates)
        if init_left > 0 or not context.scores:  # more random models while none has a score (e.g. all failed)
            proposals = [(i, "init") for i in random_available(context, min(count, max(init_left, 1)), rng)]
        else:
            proposals = self.strategy.propose(context, count, rng, round_index)
        trained = [h for h in self.state.finished if (model_dir(self.run_dir, h) / "pretrained").is_dir() or self.args.benchmark_file]
        entries = []
        for index, method in proposals:
            model_hash = self.library.hashes[index]
            entries.append({"model_hash": model_hash, "method": method, "neighbor": self.choose_neighbor(model_hash, trained)})
        if not entries:
            return False
        self.record("round", round=round_index, proposals=entries, strategy_state=self.strategy.state_dict())
        best = self.state.best()
        best_text = f"best {best[1]:.2f} ({best[0][:12]})" if best else "no scores yet"
        methods = ", ".join(sorted({e["method"] for e in entries}))
        print(f"round {round_index} [{methods}]: proposed {', '.join(e['model_hash'][:12] for e in entries)} | {best_text} | "
              f"evaluated {len(self.state.finished)}/{self.args.budget}, in flight {len(self.state.in_flight()) + len(entries)}",
              flush=True)
        return True

    def submit(self, candidate: Candidate) -> None:
        number = len(candidate.attempts) + 1
        log = model_dir(self.run_dir, candidate.model_hash) / f"job-{number}.log"
        token = f"flexibert-{candidate.model_hash[:16]}-a{number}-{time.time_ns()}"
        self.record("submit", model_hash=candidate.model_hash, attempt=number, token=token, log=str(log))
        request = JobRequest(self.run_dir.resolve(), candidate.model_hash, number, candidate.neighbor, log.resolve(), token)
        job_id = self.executor.submit(request)
        self.record("launched", model_hash=candidate.model_hash, job_id=job_id)

    # -- the loop ----------------------------------------------------------------------------------------------

    def stop_requested(self, signum, frame) -> None:
        if self.stop_reason is not None:
            raise KeyboardInterrupt
        self.stop_reason = "interrupted"
        print("\nstopping: the journal is up to date; re-run the same command to resume (interrupt again to stop at once)",
              file=sys.stderr, flush=True)

    def run(self) -> str:
        """Run until the budget is spent or the strategy has converged (and nothing is in flight); returns why it stopped."""
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
            converged = self.strategy.converged and len(self.state.finished) >= self.args.num_init
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
        flying = [c for c in self.state.in_flight() if c.in_flight.job_id is not None]
        if not flying:
            return
        if self.executor.cancel_on_stop:
            self.executor.cancel([c.in_flight.job_id for c in flying])
            for candidate in flying:
                self.record("cancelled", model_hash=candidate.model_hash)
            print(f"cancelled {len(flying)} running job(s); they restart from their checkpoints on resume", file=sys.stderr)
        else:
            print(f"{len(flying)} job(s) keep running on {self.executor.name}; a resumed run adopts them", file=sys.stderr)

    def finish(self, reason: str) -> None:
        write_tables(self.run_dir, self.state, self.library)
        if self.state.finished:
            write_plots(self.run_dir, self.state, self.library)
            write_scored_library(self.run_dir, self.state, self.library)
        if reason != "interrupted":
            self.record("stop", reason=reason)
        best = self.state.best()
        summary = f"best {best[1]:.2f}: {best[0]}" if best else "no model scored"
        print(f"search {'stopped' if reason == 'interrupted' else 'finished'} ({reason}) after {len(self.state.finished)} "
              f"evaluated, {len(self.state.failed())} failed; {summary}\nresults in {self.run_dir}/ (leaderboard.md, "
              "history.csv, report/)", flush=True)


def open_library(path: str) -> Library:
    try:
        library = load_library(path)
    except LibraryFileError as err:
        raise SearchError(str(err)) from None
    if library.embeddings is None or library.neighbors is None:
        raise SearchError(f"{path} has no embeddings or neighbours; build it with embeddings/generate_library.py")
    return library


def open_run(args: argparse.Namespace, run_dir: Path, journal: Journal) -> SearchState:
    """Start a new run or check that this command continues the one in ``run_dir``."""
    state = SearchState.replay(journal.read())
    config = search_config(args)
    if state.config is not None:
        changed = [name for name in FIXED_SETTINGS if state.config.get(name) != config.get(name)]
        if changed:
            details = "; ".join(f"{name}: was {state.config.get(name)!r}, now {config.get(name)!r}" for name in changed)
            raise RunDirError(f"{run_dir} holds a search with other settings ({details}); use the original flags to resume it "
                              "or a new --run_dir for a new search")
        print(f"resuming {run_dir}: {len(state.finished)} evaluated, {len(state.in_flight())} in flight, "
              f"{len(state.failed())} failed, {state.rounds} rounds", flush=True)
    elif args.benchmark_file is None:
        check_training_args(args)
    write_json_atomic(run_dir / JOB_CONFIG_FILE, job_config(args))
    state.apply(journal.append("run", config=config, argv=sys.argv[1:]))
    return state


def run_search(args: argparse.Namespace) -> SearchState:
    """Open (or resume) the run in ``args.run_dir`` and search until done; returns the final state."""
    run_dir = Path(args.run_dir)
    library = open_library(args.dataset_file)
    if args.benchmark_file and not Path(args.benchmark_file).is_file():
        raise SearchError(f"--benchmark_file {args.benchmark_file}: no such file")
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        journal = Journal(run_dir)
        state = open_run(args, run_dir, journal)
        strategy = make_strategy(args, run_dir)
        strategy.load_state_dict(state.strategy_state)
        controller = Controller(args, run_dir, journal, state, library, strategy, create_executor(args, run_request))
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


