"""The search's memory: an append-only JSON-lines journal in the run folder, and the state replayed from it.

Every decision the controller takes (a round's proposals, a submission, a result, a retry, a final
failure) is one line, flushed and fsynced before the controller acts on it. A controller killed at
any moment therefore restarts from exactly what it had decided; a line cut short by the kill is
ignored. The lock file keeps two controllers off one run folder (``flock`` is released by the
kernel when a process dies, so a killed controller never leaves a stale lock).
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexibert.search.layout import RunLayout


class Event(str, enum.Enum):
    """The kinds of journal lines; the values are what the journal file holds (its format)."""

    RUN = "run"  # a controller started (or resumed) the search: its settings and command line
    SCREEN = "screen"  # a model measured against a cap before it could be proposed (search/screening.py), and the verdict
    ROUND = "round"  # a round of proposals, with the strategy's state after proposing
    SUBMIT = "submit"  # an attempt is about to be launched, under a unique token
    LAUNCHED = "launched"  # the executor's job id of the current attempt
    FINISH = "finish"  # the current attempt wrote a valid score
    ATTEMPT_FAILED = "attempt_failed"  # the current attempt ended without a score (it may be retried)
    CANCELLED = "cancelled"  # the current attempt was stopped with the controller (it restarts on resume)
    FAIL = "fail"  # the candidate ran out of retries: recorded as failed, never proposed again
    STOP = "stop"  # the search ended (budget, convergence, library exhausted)


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (locked, or started with other settings)."""


class RunLock:
    """An exclusive, non-blocking lock on ``run_dir``; a second controller gets a clear error."""

    def __init__(self, run_dir: Path):
        self.path = RunLayout(run_dir).lock
        self._handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunDirError(f"{self.path.parent} is in use by {owner}; wait for it to finish or stop it first") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class Journal:
    """Appends events to ``run_dir/journal.jsonl`` durably, and reads them back."""

    def __init__(self, run_dir: Path):
        self.path = RunLayout(run_dir).journal

    def append(self, event: Event | str, **fields: Any) -> dict:
        """Write one event durably (an unknown kind is refused here, not when the run is resumed)."""
        record = {"event": Event(event).value, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def read(self, repair: bool = True) -> list[dict]:
        """All complete events; an unterminated last line (cut by a kill) is dropped and, with ``repair``, cut from the file.

        Only the run's controller (which holds the lock) may repair: a reader beside a live search
        (the hierarchical step, a report) would cut the line the controller is writing. Every line is
        replayed as it is read, so a line that is not an event, or that no earlier line makes sense of
        (a result for a model no round proposed), is a RunDirError naming the file and the line.
        """
        return self._replay(repair)[0]

    def state(self, repair: bool = True) -> SearchState:
        """The state the journal's events replay to (the replay that checked them while reading; see :meth:`read`)."""
        return self._replay(repair)[1]

    def _replay(self, repair: bool) -> tuple[list[dict], SearchState]:
        if not self.path.exists():
            return [], SearchState()
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise RunDirError(f"{self.path}: cannot read the journal ({err.strerror}); check the run folder") from None
        complete, _, partial = raw.rpartition(b"\n")
        if partial and repair:
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        events, state = [], SearchState()
        for number, line in enumerate(complete.split(b"\n"), 1):
            if not line.strip():
                continue
            fix = (f"if the journal was edited or corrupted, fix line {number}, or delete it and every later line to resume from "
                   "before it, or start a new --run_dir")
            try:
                event = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise RunDirError(f"{self.path}:{number}: byte {err.start + 1} of the line is not UTF-8 text (binary data); "
                                  f"{fix}") from None
            except ValueError as err:  # a JSONDecodeError
                raise RunDirError(f"{self.path}:{number} is not valid JSON ({err}); {fix}") from None
            try:
                state.apply(event)
            except RunDirError as err:
                raise RunDirError(f"{self.path}:{number}: {err}; {fix}") from None
            events.append(event)
        return events, state


@dataclass
class Attempt:
    """One submission of a candidate to an executor."""

    number: int
    token: str  # unique name given to the job before it is launched, so a job launched by a killed controller can be found
    log: str | None
    job_id: str | None = None  # the executor's id, once the launch is journaled
    outcome: str | None = None  # None while in flight; else 'finished', 'failed', 'cancelled'


@dataclass
class Candidate:
    """A proposed model and everything that happened to it."""

    model_hash: str
    method: str
    round: int
    neighbor: str | None
    attempts: list[Attempt] = field(default_factory=list)
    score: float | None = None
    wall_s: float | None = None
    parameters: int | None = None
    objectives: dict[str, float] | None = None  # every objective's value (flexibert/search/objectives.py), once finished
    training: dict | None = None  # how a trained model was pretrained: scratch or warm (search/job.py training_record)
    failed_reason: str | None = None

    @property
    def open_attempt(self) -> Attempt | None:
        """The last attempt if it has not ended (a job submitted or running)."""
        last = self.attempts[-1] if self.attempts else None
        return last if last is not None and last.outcome is None else None

    @property
    def done(self) -> bool:
        return self.score is not None or self.failed_reason is not None

    @property
    def failures(self) -> int:
        return sum(attempt.outcome == "failed" for attempt in self.attempts)


@dataclass
class SearchState:
    """What the journal says: the run's settings, the candidates in proposal order, finishes in completion order."""

    config: dict | None = None
    candidates: dict[str, Candidate] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    rounds: int = 0
    strategy_state: dict = field(default_factory=dict)
    stopped: str | None = None
    screened: dict[str, dict] = field(default_factory=dict)  # model hash -> its screen event: measurement and verdict

    @classmethod
    def replay(cls, events: list[dict]) -> SearchState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: dict) -> None:
        """Take one journal event into the state; a RunDirError says what is wrong with an event that cannot be applied."""
        if not isinstance(event, dict):
            raise RunDirError(f"the line is {self._json_type(event)}, not a journal event (a JSON object with an 'event' field)")
        if "event" not in event:
            raise RunDirError(f"the line has no 'event' field (one of {', '.join(kind.value for kind in Event)})")
        try:
            kind = Event(event["event"])
        except (ValueError, TypeError):
            raise RunDirError(f"unknown journal event {event['event']!r}; was this run folder written by a newer FlexiBERT?") from None
        try:
            self._APPLY[kind](self, event)
        except KeyError as err:
            raise RunDirError(f"the {kind.value!r} event has no {err.args[0]!r} field") from None
        except (TypeError, AttributeError, IndexError, ValueError) as err:
            raise RunDirError(f"the {kind.value!r} event is malformed ({err})") from None

    @staticmethod
    def _json_type(value: object) -> str:
        """What a parsed JSON value is, in JSON's words (``an array``, ``a string``, ...)."""
        names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        return "null" if value is None else names.get(type(value), type(value).__name__)

    def _candidate(self, event: dict) -> Candidate:
        """The candidate an event is about, which an earlier round must have proposed."""
        model_hash = event["model_hash"]
        if not isinstance(model_hash, str) or model_hash not in self.candidates:
            raise RunDirError(f"the {event['event']!r} event names model {model_hash!r}, which no earlier 'round' event proposed")
        return self.candidates[model_hash]

    def _apply_run(self, event: dict) -> None:
        if not isinstance(event["config"], dict):
            raise RunDirError(f"the 'run' event's config is {self._json_type(event['config'])}, not an object")
        self.config = self.config or event["config"]  # the first run's settings; a resume must match them
        self.stopped = None

    def _apply_screen(self, event: dict) -> None:
        if not isinstance(event["model_hash"], str) or not isinstance(event["allowed"], bool):
            raise RunDirError("the 'screen' event needs a 'model_hash' string and an 'allowed' boolean")
        if not all(isinstance(event[key], int) for key in ("round", "attempt")):
            raise RunDirError("the 'screen' event needs a whole-number 'round' and 'attempt'")
        self.screened[event["model_hash"]] = event

    def _apply_round(self, event: dict) -> None:
        if isinstance(event["round"], bool) or not isinstance(event["round"], int) or not isinstance(event["proposals"], list):
            raise RunDirError("the 'round' event needs a whole-number 'round' and an array of 'proposals'")
        if not all(isinstance(p, dict) and isinstance(p.get("model_hash"), str) for p in event["proposals"]):
            raise RunDirError("the 'round' event has a proposal that is not an object with a 'model_hash' string")
        self.rounds = event["round"] + 1
        self.strategy_state = event.get("strategy_state", {})
        for proposal in event["proposals"]:
            self.candidates[proposal["model_hash"]] = Candidate(
                proposal["model_hash"], proposal["method"], event["round"], proposal.get("neighbor"))

    def _apply_submit(self, event: dict) -> None:
        self._candidate(event).attempts.append(Attempt(event["attempt"], event["token"], event.get("log")))

    def _apply_launched(self, event: dict) -> None:
        candidate = self._candidate(event)
        if not candidate.attempts:
            raise RunDirError(f"the 'launched' event names model {candidate.model_hash!r}, which no earlier 'submit' event submitted")
        candidate.attempts[-1].job_id = event["job_id"]

    def _end_attempt(self, event: dict, outcome: str) -> Candidate:
        candidate = self._candidate(event)
        if candidate.open_attempt is not None:
            candidate.open_attempt.outcome = outcome
        return candidate

    def _apply_finish(self, event: dict) -> None:
        score, objectives = event["score"], event.get("objectives")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise RunDirError(f"the 'finish' event's score is {score!r}, not a number")
        if objectives is not None and not isinstance(objectives, dict):
            raise RunDirError(f"the 'finish' event's objectives are {self._json_type(objectives)}, not an object")
        candidate = self._end_attempt(event, "finished")
        candidate.score, candidate.wall_s, candidate.parameters = score, event.get("wall_s"), event.get("parameters")
        # Runs journaled before objectives existed optimised the score alone.
        candidate.objectives = objectives or {"glue": score}
        candidate.training = event.get("training") if isinstance(event.get("training"), dict) else None
        self.finished.append(candidate.model_hash)

    def _apply_attempt_failed(self, event: dict) -> None:
        self._end_attempt(event, "failed")

    def _apply_cancelled(self, event: dict) -> None:
        self._end_attempt(event, "cancelled")

    def _apply_fail(self, event: dict) -> None:
        self._candidate(event).failed_reason = event["reason"]

    def _apply_stop(self, event: dict) -> None:
        self.stopped = event["reason"]

    # One apply step per kind of event (a class attribute, not a field).
    _APPLY = {Event.RUN: _apply_run, Event.SCREEN: _apply_screen, Event.ROUND: _apply_round, Event.SUBMIT: _apply_submit,
              Event.LAUNCHED: _apply_launched, Event.FINISH: _apply_finish, Event.ATTEMPT_FAILED: _apply_attempt_failed,
              Event.CANCELLED: _apply_cancelled, Event.FAIL: _apply_fail, Event.STOP: _apply_stop}

    def scores(self) -> dict[str, float]:
        """Finished models and their scores, in completion order."""
        return {h: self.candidates[h].score for h in self.finished}

    def objective_values(self, names: list[str]) -> dict[str, list[float]]:
        """Finished models and their objectives' values (in the order of ``names``), in completion order."""
        return {h: [self.candidates[h].objectives[name] for name in names] for h in self.finished}

    def in_flight(self) -> list[Candidate]:
        """Candidates with an attempt submitted or running."""
        return [c for c in self.candidates.values() if c.open_attempt is not None]

    def waiting(self) -> list[Candidate]:
        """Proposed candidates with nothing in flight that are neither finished nor failed: to be (re)submitted."""
        return [c for c in self.candidates.values() if not c.done and c.open_attempt is None]

    def refused(self, before: tuple[int, int] | None = None) -> set[str]:
        """Models a screened cap ruled out (measured, over the cap, never to be proposed); with ``before`` = (round, attempt),
        those screened earlier only, so that a resumed round sees at each attempt what the first controller saw."""
        return {h for h, event in self.screened.items()
                if not event["allowed"] and (before is None or (event["round"], event["attempt"]) < before)}

    def failed(self) -> list[Candidate]:
        return [c for c in self.candidates.values() if c.failed_reason is not None]
