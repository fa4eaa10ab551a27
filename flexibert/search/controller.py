"""The search loop: a strategy proposes, an executor trains and scores, the journal remembers every decision.

``run_search`` opens (or resumes) a run folder and drives the ``Controller`` until the budget is spent,
the strategy has converged or the library is exhausted. Nothing is decided without being journaled
first, so a controller killed at any moment resumes where it stopped: finished results are kept,
running jobs are adopted, lost or failed jobs are retried a bounded number of times.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from embeddings.library import Library, LibraryFileError, load_shared
from flexibert.cluster import create_executor
from flexibert.cluster.base import ENDED, Executor, JobRequest
from flexibert.search.job import run_request
from flexibert.search.journal import Candidate, Event, Journal, RunDirError, RunLock, SearchState
from flexibert.search.layout import SCORE_FIELD, RunLayout
from flexibert.search.objectives import ObjectiveSet, Score, best_text, front_text, ranked
from flexibert.search.progress import ProgressBoard
from flexibert.search.report import write_plots, write_scored_library, write_tables
from flexibert.search.screening import LatencyScreen
from flexibert.search.settings import (
    SearchError,
    fixed_settings,
    job_config,
    latency_settings,
    search_config,
)
from flexibert.search.start_checks import (
    check_benchmark,
    check_library_hashes,
    check_objectives,
    check_training_inputs,
    is_new_run,
)
from flexibert.search.strategies import STRATEGIES, SearchContext, Strategy
from flexibert.search.transfer import closest_trained_neighbor
from flexibert.utils.files import write_json_atomic

SCREEN_CHOICES = 4  # with --max_latency_ms, proposals a strategy ranks per model wanted (measured in order until enough pass)


class Controller:
    """The search loop: ingest finished jobs, resubmit failed ones, propose and submit new ones, until the budget or convergence."""

    def __init__(self, args: argparse.Namespace, run: RunLayout, journal: Journal, state: SearchState, library: Library,
                 strategy: Strategy, executor: Executor):
        self.args, self.layout, self.journal, self.state = args, run, journal, state
        self.library, self.strategy, self.executor = library, strategy, executor
        self.progress = ProgressBoard(str(run.root))  # each running model's stage, step/total and ETA while waiting
        self.objectives = ObjectiveSet.from_args(args)
        caps = self.objectives.screened  # --max_latency_ms: measured model by model before proposing
        self.screen = LatencyScreen(library, caps[0], latency_settings(args, capped=True)) if caps else None
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
        record = {"score": float(score), "wall_s": results.get("wall_time_s"), "parameters": results.get("parameters"),
                  "objectives": values}
        if isinstance(results.get("training"), dict):  # how it was pretrained (search/job.py training_record)
            record["training"] = results["training"]
        return record

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
        best_hash = ranked(self.state)[0]
        value = "" if isinstance(self.objectives.headline, Score) else f", {best_text(self.state, candidate.model_hash)}"
        front = f", {text}" if (text := front_text(self.state)) else ""
        print(f"  {candidate.model_hash[:12]} scored {candidate.score:.2f}{value} ({candidate.method}); "
              f"best {best_text(self.state, best_hash)} ({best_hash[:12]}); {len(self.state.finished)} evaluated{front}", flush=True)

    # -- proposing and submitting ------------------------------------------------------------------------------

    def choose_neighbor(self, model_hash: str, trained: list[str]) -> str | None:
        """The trained library neighbour to warm-start from (search/transfer.py), or None to train from scratch."""
        if self.args.no_transfer:
            return None
        return closest_trained_neighbor(self.library, model_hash, set(trained), self.args.transfer_threshold)

    def _context(self, round_index: int, attempt: int) -> SearchContext:
        """What the strategy sees at this attempt of this round: the scores so far, and as unavailable every model proposed
        or refused by a screened cap at an earlier attempt."""
        values = self.state.objective_values(self.objectives.names)
        scores = self.state.scores()
        if not self.objectives.multi:  # one objective: what a strategy maximises, whichever it is
            scores = {h: v[0] if self.objectives.maximize[0] else -v[0] for h, v in values.items()}
        return SearchContext(self.library, scores, set(self.state.candidates) | self.state.refused(before=(round_index, attempt)),
                             self.objectives, values)

    def _ask(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
        """The strategy's initial design, then its proposals."""
        init_left = self.args.num_init - len(self.state.candidates)
        if init_left > 0 or not context.scores:  # more initial models while none has a score (e.g. all failed)
            return [(i, "init") for i in self.strategy.initial(context, min(count, max(init_left, 1)), self.args.num_init, rng)]
        return self.strategy.propose(context, count, rng, round_index)

    def passes_screen(self, model_hash: str, round_index: int, attempt: int) -> bool:
        """Whether a screened cap (--max_latency_ms) allows the model: measured and journaled the first time it is asked."""
        if self.screen is None:
            return True
        if model_hash not in self.state.screened:
            self.record(Event.SCREEN, round=round_index, attempt=attempt, **self.screen.verdict(model_hash))
            event = self.state.screened[model_hash]
            if not event["allowed"]:
                print(f"  {model_hash[:12]} not proposed: {event['latency']['median_ms']:.2f} ms > --max_latency_ms "
                      f"{event['limit_ms']:g}", flush=True)
        return self.state.screened[model_hash]["allowed"]

    def propose(self, count: int) -> bool:
        """Journal one round of proposals; False if the library has nothing left to propose.

        When a screened cap refuses every model the strategy ranked, the round is asked again from the
        strategy's state before it (so one round is one decision of the strategy), without the refused models.
        """
        round_index, before = self.state.rounds, copy.deepcopy(self.strategy.state_dict())
        for attempt in itertools.count():
            context = self._context(round_index, attempt)
            if not context.available.any():  # every allowed model was proposed: a normal end, not a strategy's problem
                return False
            if attempt:
                self.strategy.load_state_dict(before)
            rng = np.random.default_rng([self.args.seed, round_index, *([attempt] if attempt else [])])
            # With a screened cap the strategy ranks more models than wanted; they are measured in its order until enough pass.
            asked = self._ask(context, count * (SCREEN_CHOICES if self.screen else 1), rng, round_index)
            if not asked:
                return False
            passing = ((i, method) for i, method in asked if self.passes_screen(self.library.hashes[i], round_index, attempt))
            proposals = list(itertools.islice(passing, count))
            if proposals:
                break
        trained = [h for h in self.state.finished if self.layout.model(h).pretrained.is_dir() or self.args.benchmark_file]
        entries = []
        for index, method in proposals:
            model_hash = self.library.hashes[index]
            entries.append({"model_hash": model_hash, "method": method, "neighbor": self.choose_neighbor(model_hash, trained)})
        self.record(Event.ROUND, round=round_index, proposals=entries, strategy_state=self.strategy.state_dict())
        best = ranked(self.state)[:1]
        best_now = f"best {best_text(self.state, best[0])} ({best[0][:12]})" if best else "no scores yet"
        methods = ", ".join(sorted({e["method"] for e in entries}))
        print(f"round {round_index} [{methods}]: proposed {', '.join(e['model_hash'][:12] for e in entries)} | {best_now} | "
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
                self.progress.show(c.model_hash for c in self.state.in_flight())
                self.executor.pause()
                self.progress.hide()  # the controller prints next: bars on a terminal would be overwritten
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
        best = ranked(self.state)[:1]
        summary = f"best {best_text(self.state, best[0])}: {best[0]}" if best else "no model scored"
        if best and (front := front_text(self.state)):
            summary += f"; {front} (leaderboard.md marks them, report/pareto.png draws them)"
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
    state = journal.state()
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
    """``name.key: was X, now Y`` for each setting that differs, down to the keys of nested settings (not whole dicts).
    A key the run's record lacks is a setting newer than the run: its help says which flag restores the earlier way."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str) if old.get(key) != new.get(key)
                for line in (differences(f"{name}.{key}", old[key], new.get(key)) if key in old
                             else [f"{name}.{key}: not recorded (the run predates it), now {new[key]!r}"])]
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


