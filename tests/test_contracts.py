"""The contracts between the pieces, each with one home: settings -> flags, journal events, the run-folder layout, strategies."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from flexibert.search.journal import Event, Journal, RunDirError, SearchState
from flexibert.search.layout import SCORE_FIELD, RunLayout
from flexibert.search.settings import parse_args as search_args
from flexibert.search.strategies import Boshnas, BoshnasSettings
from flexibert.utils.cli import add_flags, from_flags, setting


@dataclass
class ToySettings:
    rate: float = setting(0.5, "a rate")
    restarts: int = setting(10, "start points", flag="toy_restarts")
    second_order: bool = setting(True, "use first-order steps", flag="toy_first_order")
    verbose: bool = setting(False, "say more")
    tasks: list[str] = setting(["a", "b"], "tasks", metavar="TASK")
    hidden: str = setting("x", "not on the command line", flag=None)
    limit: int | None = setting(None, "an optional limit")

    def __post_init__(self) -> None:
        if self.restarts < 1:
            raise ValueError("--toy_restarts must be at least 1")


def toy_parser(**defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_flags(parser, ToySettings, **defaults)
    return parser


def test_settings_become_flags_and_come_back():
    parser = toy_parser()
    flags = {action.option_strings[0] for action in parser._actions if action.option_strings} - {"-h"}
    assert flags == {"--rate", "--toy_restarts", "--toy_first_order", "--verbose", "--tasks", "--limit"}
    assert from_flags(ToySettings, parser.parse_args([])) == ToySettings()
    settings = from_flags(ToySettings, parser.parse_args(["--rate", "2", "--toy_restarts", "3", "--toy_first_order", "--verbose",
                                                          "--tasks", "c", "d", "e", "--limit", "7"]))
    assert settings == ToySettings(rate=2.0, restarts=3, second_order=False, verbose=True, tasks=["c", "d", "e"], limit=7)
    assert from_flags(ToySettings, parser.parse_args([]), hidden="y").hidden == "y"
    with pytest.raises(ValueError, match="--toy_restarts must be at least 1"):
        from_flags(ToySettings, parser.parse_args(["--toy_restarts", "0"]))


def test_a_recipe_overrides_defaults_and_unknown_overrides_are_refused():
    assert from_flags(ToySettings, toy_parser(rate=0.1).parse_args([])).rate == 0.1
    with pytest.raises(TypeError, match="no such settings"):
        toy_parser(speed=1)
    assert ToySettings().tasks is not ToySettings().tasks  # list defaults are not shared between instances


def test_boshnas_flags_keep_their_names_and_what_the_journal_records():
    args = search_args(["--dataset_file", "x", "--gobi_restarts", "4", "--first_order", "--convergence_tol", "0.5", "--seed", "9"])
    settings = from_flags(BoshnasSettings, args)
    assert (settings.restarts, settings.second_order, settings.tolerance, settings.seed) == (4, False, 0.5, 9)
    # The journal's record of BOSHNAS's settings, as run folders of earlier versions hold it (a resume compares them).
    # With --embedding_only the record is exactly theirs, so they resume with it; the choices as inputs are a new setting,
    # and so is the linear prior: a run started with the choices and without the prior resumes with --no_linear_prior.
    earlier = ["k1", "k2", "restarts", "second_order", "prob_uncertainty", "prob_random", "patience", "aleatoric_rounds", "tolerance",
               "surrogate_epochs", "snap_metric", "seed"]
    assert sorted(Boshnas(settings).recorded_settings()) == sorted([*earlier, "choice_inputs", "linear_prior"])
    no_prior = from_flags(BoshnasSettings, search_args(["--dataset_file", "x", "--no_linear_prior"]))
    assert sorted(Boshnas(no_prior).recorded_settings()) == sorted([*earlier, "choice_inputs"])
    embedding_only = from_flags(BoshnasSettings, search_args(["--dataset_file", "x", "--embedding_only"]))
    assert sorted(Boshnas(embedding_only).recorded_settings()) == sorted(earlier)
    with pytest.raises(SystemExit):
        search_args(["--dataset_file", "x", "--gobi_restarts", "0"])


def test_journal_event_kinds_are_the_file_format(tmp_path):
    assert [e.value for e in Event] == ["run", "screen", "round", "submit", "launched", "finish", "attempt_failed", "cancelled",
                                        "fail", "stop"]
    journal = Journal(tmp_path)
    with pytest.raises(ValueError):
        journal.append("finnish", model_hash="a")  # a typo fails when written, not when the run is resumed
    assert not (tmp_path / "journal.jsonl").exists()
    journal.append(Event.RUN, config={"strategy": "random"})
    assert journal.read()[0]["event"] == "run"
    with pytest.raises(RunDirError, match="unknown journal event 'merge'"):
        SearchState.replay([{"event": "merge"}])


def test_the_run_folder_layout_keeps_its_names(tmp_path):
    run = RunLayout(tmp_path)
    model = run.model("abc")
    assert {path.relative_to(tmp_path).as_posix() for path in (
        run.journal, run.lock, run.job_config, run.history, run.leaderboard_csv, run.leaderboard_md, run.report, run.scored_library,
        run.surrogate_checkpoint(3), model.results, model.pretrained, model.glue, model.started, model.starts, model.log(2))} == {
        "journal.jsonl", ".lock", "job_config.json", "history.csv", "leaderboard.csv", "leaderboard.md", "report",
        "library_scored.json", "surrogate/round-0003.pt", "models/abc/results.json", "models/abc/pretrained", "models/abc/glue",
        "models/abc/started.json", "models/abc/starts", "models/abc/job-2.log"}
    assert SCORE_FIELD == "glue_score"


def test_boshnas_resumes_a_journaled_state_written_before_the_counter_was_renamed():
    strategy = Boshnas(BoshnasSettings(patience=1, aleatoric_rounds=1))
    strategy.load_state_dict({"same": 2, "last_best": 70.0, "last_method": "optimization", "fitted_on": 0, "surrogate_round": None})
    assert strategy.converged and "same" not in strategy.state_dict()
