"""The search controller on a synthetic benchmark: strategies, reports, resume, retries, locking, knowledge-transfer choice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from embeddings.design_space import load_design_space
from embeddings.library import Library
from flexibert import run_boshnas
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.benchmarks import synthetic_scores
from flexibert.search.comparison import random_expected_best
from flexibert.search.controller import differences
from flexibert.search.journal import Journal, RunLock, SearchState
from flexibert.search.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def search_files(tmp_path_factory) -> dict[str, Path]:
    """Every third model of the test design space at 2 layers per stack (3,104 models), embedded, and its synthetic benchmark."""
    work = tmp_path_factory.mktemp("search")
    full = Library.from_design_space(load_design_space(REPO / "design_space" / "design_space_test.yaml"), layers_per_stack=2)
    library = Library(model_dicts=full.model_dicts[::3], hashes=full.hashes[::3], design_space=full.design_space,
                      ops_list=full.ops_list)
    library.build_embeddings(num_neighbors=30, seed=0)
    library.save(work / "library.json")
    entries = synthetic_scores(library, seed=0)
    (work / "benchmark.json").write_text(json.dumps({"entries": entries}))
    return {"library": work / "library.json", "benchmark": work / "benchmark.json", "work": work}


def search(files: dict, run_dir: Path, *extra: str, benchmark: Path | None = None) -> SearchState:
    return run_boshnas.main(["--dataset_file", str(files["library"]), "--benchmark_file", str(benchmark or files["benchmark"]),
                             "--executor", "inline", "--run_dir", str(run_dir), *extra])


def benchmark_scores(path: Path) -> dict[str, float]:
    entries = json.loads(path.read_text())["entries"]
    return {e["model_hash"]: e["scores"]["glue"] for e in entries}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in Journal(run_dir).read() if e["event"] == kind]


def start_markers(run_dir: Path) -> dict[str, int]:
    return {folder.name: len(list((folder / "starts").iterdir())) for folder in (run_dir / "models").iterdir()}


def test_random_search_spends_its_budget_and_writes_every_report(search_files, tmp_path, capsys):
    run_dir = tmp_path / "random"
    state = search(search_files, run_dir, "--strategy", "random", "--budget", "8", "--num_init", "3", "--seed", "3")
    truth = benchmark_scores(search_files["benchmark"])

    history = read_csv(run_dir / "history.csv")
    assert [row["index"] for row in history] == [str(i) for i in range(1, 9)]
    assert len({row["model_hash"] for row in history}) == 8
    assert [row["method"] for row in history] == ["init"] * 3 + ["random"] * 5
    assert all(float(row["score"]) == truth[row["model_hash"]] for row in history)

    board = read_csv(run_dir / "leaderboard.csv")
    assert [float(r["score"]) for r in board] == sorted((float(r["score"]) for r in history), reverse=True)
    library = Library.load(search_files["library"])
    assert all(json.loads(r["model_dict"]) == library.model_dict(r["model_hash"]) for r in board)
    assert all(int(r["parameters"]) > 100_000 for r in board)
    markdown = (run_dir / "leaderboard.md").read_text()
    assert board[0]["model_hash"][:12] in markdown and "every objective (score and parameters)" in markdown
    for plot in ("best_score.png", "score_vs_parameters.png", "library_map.png"):
        assert (run_dir / "report" / plot).stat().st_size > 10_000

    scored = Library.load(run_dir / "library_scored.json")
    assert {h: p for h, p in zip(scored.hashes, scored.performances, strict=True) if p is not None} == state.scores()
    assert all(p is None for p in Library.load(search_files["library"]).performances)  # the input is never written
    assert events(run_dir, "stop")[-1]["reason"] == "budget"
    assert "round 7 [random]" in capsys.readouterr().out


def test_rerun_resumes_and_a_larger_budget_extends_the_search(search_files, tmp_path):
    run_dir = tmp_path / "resume"
    first = search(search_files, run_dir, "--strategy", "random", "--budget", "6", "--num_init", "2")
    again = search(search_files, run_dir, "--strategy", "random", "--budget", "6", "--num_init", "2")
    assert again.finished == first.finished
    assert len(events(run_dir, "finish")) == 6
    more = search(search_files, run_dir, "--strategy", "random", "--budget", "9", "--num_init", "2")
    assert more.finished[:6] == first.finished and len(more.finished) == 9
    assert set(start_markers(run_dir).values()) == {1}  # no model was evaluated twice

    # The same search in one go proposes the same models: proposals depend only on the seed and the journal.
    straight = search(search_files, tmp_path / "straight", "--strategy", "random", "--budget", "9", "--num_init", "2")
    assert straight.finished == more.finished


def test_resuming_with_other_settings_or_twice_at_once_is_refused(search_files, tmp_path):
    run_dir = tmp_path / "guarded"
    search(search_files, run_dir, "--strategy", "random", "--budget", "2", "--num_init", "2")
    with pytest.raises(SystemExit, match="seed: was 1, now 2"):
        search(search_files, run_dir, "--strategy", "random", "--budget", "2", "--num_init", "2", "--seed", "2")
    with RunLock(run_dir), pytest.raises(SystemExit, match="is in use by pid"):
        search(search_files, run_dir, "--strategy", "random", "--budget", "3", "--num_init", "2")


def test_a_setting_newer_than_the_run_is_named_as_such():
    """A resume of a run started before a setting existed says so, so that its help's "as runs started before" flag is found."""
    assert differences("boshnas", {"k1": 0.5}, {"k1": 0.5, "linear_prior": True}) == [
        "boshnas.linear_prior: not recorded (the run predates it), now True"]
    assert differences("boshnas", {"k1": 0.5, "x": None}, {"k1": 1.0, "x": 2}) == [
        "boshnas.k1: was 0.5, now 1.0", "boshnas.x: was None, now 2"]


def test_failed_jobs_are_retried_then_recorded_and_the_search_goes_on(search_files, tmp_path):
    entries = json.loads(search_files["benchmark"].read_text())["entries"]
    for entry in entries[::2]:
        entry["scores"]["glue"] = float("nan")  # half of the models' trainings diverged: their jobs fail
    diverged = tmp_path / "diverged.json"
    diverged.write_text(json.dumps({"entries": entries}))
    run_dir = tmp_path / "failing"
    state = search(search_files, run_dir, "--strategy", "random", "--budget", "8", "--num_init", "3", "--max_retries", "1",
                   benchmark=diverged)
    failed = state.failed()
    assert failed, "with half of the models' scores NaN in the benchmark, some must fail"
    assert len(state.finished) + len(failed) == 8
    for candidate in failed:
        assert len(candidate.attempts) == 2 and candidate.failures == 2
        assert f"model {candidate.model_hash} in {diverged} has the score 'glue' nan, not a finite number" in candidate.failed_reason
        log = Path(candidate.attempts[-1].log).read_text()
        assert "JobError" in log and candidate.model_hash in log
    assert f"{len(failed)} model(s) failed" in (run_dir / "leaderboard.md").read_text()


def test_evolution_changes_one_choice_of_a_parent_and_gp_runs(search_files, tmp_path):
    from flexibert.search.strategies.encoding import ChoiceEncoding

    library = Library.load(search_files["library"])
    state = search(search_files, tmp_path / "evolution", "--strategy", "evolution", "--budget", "14", "--num_init", "6",
                   "--population_size", "6")
    methods = [state.candidates[h].method for h in state.finished]
    assert methods == ["init"] * 6 + ["mutation"] * 8
    # A child differs from an earlier model in one choice (where the library has that model untried); a depth change
    # also sets the new stack's choices, so it differs in up to 1 + 4 of them.
    codes = ChoiceEncoding.of(library).codes
    distances = [min(int((codes[library.index(h)] != codes[library.index(p)]).sum()) for p in state.finished[:position])
                 for position, h in enumerate(state.finished[6:], 6)]
    assert max(distances) <= 5 and distances.count(1) >= len(distances) // 2, distances

    gp = search(search_files, tmp_path / "gp", "--strategy", "gp", "--budget", "10", "--num_init", "5")
    assert [gp.candidates[h].method for h in gp.finished][5:] == ["gp-ei"] * 5


def test_knowledge_transfer_picks_the_trained_neighbour_with_the_largest_overlap(search_files, tmp_path):
    library = Library.load(search_files["library"])
    run_dir = tmp_path / "transfer"
    state = search(search_files, run_dir, "--strategy", "evolution", "--budget", "16", "--num_init", "4", "--population_size", "4",
                   "--transfer_threshold", "0.5")
    chosen = 0
    for round_event in events(run_dir, "round"):
        finished_before = {e["model_hash"] for e in Journal(run_dir).read() if e["event"] == "finish" and e["time"] <= round_event["time"]}
        for proposal in round_event["proposals"]:
            target = library.model_dict(proposal["model_hash"])
            options = {h: model_overlap(target, library.model_dict(h)) for h in library.neighbors_of(proposal["model_hash"])
                       if h in finished_before}
            qualified = {h: o for h, o in options.items() if o >= 0.5}
            if proposal["neighbor"] is None:
                assert not qualified
            else:
                chosen += 1
                assert options[proposal["neighbor"]] == max(qualified.values())
    assert chosen >= 3, "mutations of trained models must find trained neighbours to start from"
    history = read_csv(run_dir / "history.csv")
    assert sum(bool(row["neighbor"]) for row in history) == chosen
    assert len(state.finished) == 16


def test_journal_drops_a_line_cut_by_a_kill(tmp_path):
    journal = Journal(tmp_path)
    journal.append("run", config={"strategy": "random"})
    journal.append("round", round=0, proposals=[{"model_hash": "a" * 64, "method": "init", "neighbor": None}], strategy_state={})
    with open(journal.path, "a") as handle:
        handle.write('{"event": "submit", "model_hash": "aaa')  # the kill came mid-write
    state = SearchState.replay(journal.read())
    assert state.rounds == 1 and [c.model_hash for c in state.waiting()] == ["a" * 64]
    assert journal.path.read_text().endswith("}\n")  # repaired, so the next append starts on a fresh line


def test_bad_inputs_say_what_is_wrong(search_files, tmp_path):
    with pytest.raises(SystemExit, match="no such library file"):
        run_boshnas.main(["--dataset_file", str(tmp_path / "missing.json"), "--run_dir", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="--benchmark_file .*: no such file"):
        search(search_files, tmp_path / "r", benchmark=tmp_path / "nope.json")
    with pytest.raises(SystemExit, match="--pretrain_args holds flags"):
        run_boshnas.main(["--dataset_file", str(search_files["library"]), "--run_dir", str(tmp_path / "r2"),
                          "--pretrain_args", "--no_such_flag 3"])
    with pytest.raises(SystemExit):
        run_boshnas.parse_args(["--dataset_file", "x", "--prob_random", "0.7", "--prob_uncertainty", "0.5"])


def test_warm_start_steps_follow_the_closeness_rule_unless_told(capsys):
    assert run_boshnas.parse_args(["--dataset_file", "x"]).transfer_pretrain_steps is None  # decided per model by the rule
    assert run_boshnas.parse_args(["--dataset_file", "x", "--transfer_pretrain_steps", "7"]).transfer_pretrain_steps == 7
    with pytest.raises(SystemExit):
        run_boshnas.parse_args(["--dataset_file", "x", "--pretrain_steps", "20", "--transfer_pretrain_steps", "50"])
    assert "--transfer_pretrain_steps 50 is more than --pretrain_steps 20" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_boshnas.parse_args(["--dataset_file", "x", "--transfer_threshold", "80"])
    assert "--transfer_threshold 80 is not a closeness: give a value from 0 to 1" in capsys.readouterr().err


def test_strategies_propose_deterministically(search_files):
    from flexibert.search.strategies import EvolutionSettings, GaussianProcessBO, RandomSearch, RegularizedEvolution, SearchContext

    library = Library.load(search_files["library"])
    truth = benchmark_scores(search_files["benchmark"])
    scores = {h: truth[h] for h in library.hashes[:40:4]}
    for strategy in (RandomSearch(), RegularizedEvolution(EvolutionSettings(5, 3)), GaussianProcessBO(seed=1)):
        picks = [strategy.propose(SearchContext(library, scores, set(scores)), 3, np.random.default_rng(7), 4) for _ in range(2)]
        assert picks[0] == picks[1] and len(picks[0]) == 3
        assert not {library.hashes[i] for i, _ in picks[0]} & set(scores)


def journal_length(run_dir: Path) -> int:
    journal = RunLayout(run_dir).journal
    return len(journal.read_bytes().splitlines()) if journal.is_file() else 0


def kill_and_resume_until_done(command: list[str], run_dir: Path, rng: np.random.Generator, kills: int) -> int:
    """Start the controller, SIGKILL it a random while after it has journaled something, again and again; then let it
    finish. Returns the kills made.

    The wait for the journal matters: starting the controller (imports, the library) takes a few
    seconds, and a kill before it has done anything tests nothing.
    """
    import subprocess
    import sys
    import time

    environment = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    made = 0
    for _ in range(kills):
        before = journal_length(run_dir)
        process = subprocess.Popen([sys.executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=environment, cwd=REPO)
        deadline = time.time() + 300
        while process.poll() is None and journal_length(run_dir) == before:
            assert time.time() < deadline, "the controller journaled nothing for 300 s"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 3.0))
        if process.poll() is not None:
            break
        process.kill()
        process.wait()
        made += 1
    final = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=environment, cwd=REPO, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    return made


def test_a_strategy_defined_in_one_class_runs_a_search_and_resumes(search_files, tmp_path, capsys):
    """Nothing but the subclass: its name registers it for --strategy, its settings become flags and are journaled."""
    from dataclasses import dataclass

    from flexibert.search.strategies import STRATEGIES, SearchContext, Strategy
    from flexibert.utils.cli import setting

    @dataclass
    class WidestSettings:
        widest_keep: int = setting(3, "how many of the widest untried models to choose among")

    class Widest(Strategy):
        """Among the untried models with the widest last layer, a random few."""

        name = "test-widest"
        Settings = WidestSettings

        def __init__(self, settings: WidestSettings):
            self.settings = settings

        def propose(self, context: SearchContext, count: int, rng: np.random.Generator, round_index: int) -> list[tuple[int, str]]:
            widths = np.array([d["h"][-1] for d in context.library.model_dicts])
            options = np.flatnonzero(context.available & (widths == widths[context.available].max()))
            return [(int(i), "widest") for i in rng.permutation(options)[: min(count, self.settings.widest_keep)]]

    try:
        assert STRATEGIES["test-widest"] is Widest
        with pytest.raises(SystemExit):
            run_boshnas.main(["--help"])
        assert "--widest_keep" in capsys.readouterr().out
        run_dir = tmp_path / "widest"
        state = search(search_files, run_dir, "--strategy", "test-widest", "--widest_keep", "2", "--budget", "6", "--num_init", "2")
        library = Library.load(search_files["library"])
        widest = max(d["h"][-1] for d in library.model_dicts)
        assert [state.candidates[h].method for h in state.finished] == ["init"] * 2 + ["widest"] * 4
        assert all(library.model_dict(h)["h"][-1] == widest for h in state.finished[2:])
        assert events(run_dir, "run")[0]["config"]["test-widest"] == {"widest_keep": 2}
        with pytest.raises(SystemExit, match="test-widest.widest_keep: was 2, now 3"):
            search(search_files, run_dir, "--strategy", "test-widest", "--budget", "6", "--num_init", "2")
    finally:
        del STRATEGIES["test-widest"]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(search_files, tmp_path):
    run_dir = tmp_path / "killed"
    # BOSHNAS: its proposals depend on a warm-started surrogate, which a resumed controller must restore exactly.
    flags = ["--strategy", "boshnas", "--surrogate_epochs", "50", "--budget", "5", "--num_init", "2", "--seed", "5"]
    command = ["-m", "flexibert.run_boshnas", "--dataset_file", str(search_files["library"]), "--benchmark_file",
               str(search_files["benchmark"]), "--executor", "local", "--poll_interval", "0.2", "--run_dir", str(run_dir), *flags]
    kills = kill_and_resume_until_done(command, run_dir, np.random.default_rng(0), kills=4)
    assert kills >= 3
    reference = search(search_files, tmp_path / "reference", *flags)
    state = SearchState.replay(Journal(run_dir).read())
    assert state.finished == reference.finished  # one job at a time: the same models in the same order
    assert state.scores() == reference.scores()
    assert set(start_markers(run_dir).values()) == {1}, start_markers(run_dir)  # adopted, never started twice
    assert state.stopped == "budget"


@pytest.mark.slow
def test_boshnas_beats_random_search_on_average_and_the_comparison_is_reported(search_files, tmp_path):
    from flexibert import compare_strategies

    output = tmp_path / "compare"
    curves = compare_strategies.main([
        "--dataset_file", str(search_files["library"]), "--benchmark_file", str(search_files["benchmark"]),
        "--strategies", "boshnas", "random", "--seeds", "1", "2", "3", "--budget", "12", "--num_init", "6",
        "--surrogate_epochs", "100", "--output_dir", str(output)])
    # The best score so far, averaged over the evaluations after the shared random start and over seeds: a single
    # final best is dominated by the benchmark's noise (one lucky random draw), this is not.
    boshnas, random_search = curves["boshnas"][:, 6:].mean(), curves["random"][:, 6:].mean()
    assert boshnas > random_search, (boshnas, random_search)
    assert curves["boshnas"].shape == (3, 12) and np.all(np.diff(curves["boshnas"], axis=1) >= 0)
    table = (output / "comparison.md").read_text()
    assert "| boshnas | 3 |" in table and "best@12" in table
    scores = [entry["scores"]["glue"] for entry in json.loads(Path(search_files["benchmark"]).read_text())["entries"]]
    assert len(scores) == len(Library.load(search_files["library"]))  # every library model once: random's exact curve applies
    row = next(line for line in table.splitlines() if line.startswith("| random search, exact expectation | - |"))
    assert row.endswith(f"| {random_expected_best(np.array(scores), 12):.2f} |"), table  # best@12, the last column
    assert (output / "comparison.png").stat().st_size > 10_000
    assert (output / "boshnas_seed2" / "leaderboard.md").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_search_resumes(search_files, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "interrupted"
    command = [sys.executable, "-m", "flexibert.run_boshnas", "--dataset_file", str(search_files["library"]), "--benchmark_file",
               str(search_files["benchmark"]), "--executor", "local", "--poll_interval", "0.2", "--run_dir", str(run_dir),
               "--strategy", "random", "--budget", "3", "--num_init", "2"]
    environment = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=REPO)
    deadline = time.time() + 120
    while not ((run_dir / "journal.jsonl").exists() and events(run_dir, "launched")):
        assert time.time() < deadline, "the controller never launched a job"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "stopping: the journal is up to date" in err and "search stopped (interrupted)" in out
    cancelled = events(run_dir, "cancelled")
    assert cancelled and not events(run_dir, "stop")
    job_id = events(run_dir, "launched")[0]["job_id"]
    assert not Path(f"/proc/{job_id.split(':')[0]}").exists() or events(run_dir, "finish"), "the local job was left running"

    final = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    state = SearchState.replay(Journal(run_dir).read())
    assert len(state.finished) == 3 and state.stopped == "budget" and not state.failed()


def test_a_search_in_which_every_evaluation_failed_exits_non_zero_and_says_why(search_files, tmp_path):
    entries = json.loads(search_files["benchmark"].read_text())["entries"]
    for entry in entries:
        entry["scores"]["glue"] = float("nan")  # every training diverged: no model can be scored
    diverged = tmp_path / "diverged.json"
    diverged.write_text(json.dumps({"entries": entries}))
    run_dir = tmp_path / "all_failed"
    with pytest.raises(SystemExit) as stopped:
        search(search_files, run_dir, "--strategy", "random", "--budget", "3", "--num_init", "2", "--max_retries", "0",
               benchmark=diverged)
    message = str(stopped.value.code)
    assert message.startswith("error: every evaluated model failed (3); no model has a score")
    assert "not a finite number" in message and "the last error in" in message and "JobError" in message
    assert "new --run_dir" in message


def test_a_refused_resume_names_only_the_settings_that_differ(search_files, tmp_path):
    run_dir = tmp_path / "run"
    search(search_files, run_dir, "--strategy", "boshnas", "--budget", "2", "--num_init", "2")
    with pytest.raises(SystemExit) as stopped:
        search(search_files, run_dir, "--strategy", "boshnas", "--budget", "2", "--num_init", "2", "--k1", "2.0")
    message = str(stopped.value.code)
    assert "boshnas.k1: was 0.5, now 2.0" in message and "k2" not in message and len(message) < 400


def test_a_reader_beside_a_live_search_never_cuts_the_line_being_written(tmp_path):
    journal = Journal(tmp_path)
    journal.append("run", config={})
    with open(journal.path, "a") as handle:
        handle.write('{"event": "round", "rou')  # the controller is half-way through a line
    before = journal.path.read_bytes()
    assert [e["event"] for e in journal.read(repair=False)] == ["run"] and journal.path.read_bytes() == before
    assert [e["event"] for e in journal.read()] == ["run"] and journal.path.read_bytes() == before.rpartition(b"\n")[0] + b"\n"
