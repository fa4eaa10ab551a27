"""The search on SLURM: the executor's state table, sbatch options and batch script (no SLURM needed), then searches on
the real single-node cluster of slurm/local_cluster.sh (tests/slurm_cluster.py), which are marked slow.

On the cluster, jobs score models from a synthetic benchmark file (fast) except in the last test, which pretrains
and fine-tunes one tiny model on real WikiText-2 and SST-2 through SLURM.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import slurm_cluster

from embeddings.library import Library
from flexibert import run_boshnas
from flexibert.cluster.base import ENDED, FAILED, LOST, PENDING, RUNNING, JobRequest
from flexibert.cluster.slurm import (
    DEFAULT_SCRIPT,
    REPO,
    SlurmError,
    SlurmExecutor,
    SlurmSettings,
    job_status,
    sbatch_command,
    settings_from_args,
    time_limit_seconds,
)
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.benchmarks import synthetic_scores
from flexibert.search.journal import Journal, SearchState
from flexibert.search.transfer import warm_start_steps

# The session fixture that starts the cluster (bound here so that pytest finds it; see tests/test_slurm_cluster.py).
slurm_env = slurm_cluster.slurm_env

SHARED = REPO.parent / "shared" / "data"
HASH = "ab" * 32


def request(tmp_path: Path, neighbor: str | None = None, attempt: int = 1) -> JobRequest:
    return JobRequest(tmp_path / "run", HASH, attempt, neighbor, tmp_path / "run" / "job-1.log", f"flexibert-test-{time.time_ns()}")


# ---------------------------------------------------------------------------------------------------------------------
# Without SLURM: states, sbatch options, settings, the batch script
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "reason", "expected", "detail"), [
    ("PENDING", "Priority", PENDING, "PENDING (Priority)"),
    ("CONFIGURING", "None", PENDING, "CONFIGURING"),
    ("REQUEUED", "", PENDING, "REQUEUED"),
    ("REQUEUE_HOLD", "JobHeldUser", PENDING, "REQUEUE_HOLD (JobHeldUser)"),
    ("RUNNING", "None", RUNNING, "RUNNING"),
    ("COMPLETING", "None", RUNNING, "COMPLETING"),
    ("RESIZING", "", RUNNING, "RESIZING"),
    ("SUSPENDED", "", RUNNING, "SUSPENDED"),
    ("COMPLETED", "None", ENDED, "COMPLETED"),
    ("FAILED", "NonZeroExitCode", FAILED, "FAILED (NonZeroExitCode)"),
    ("TIMEOUT", "TimeLimit", FAILED, "TIMEOUT (TimeLimit)"),
    ("OUT_OF_MEMORY", "OutOfMemory", FAILED, "OUT_OF_MEMORY (OutOfMemory)"),
    ("NODE_FAIL", "NodeDown", FAILED, "NODE_FAIL (NodeDown)"),
    ("PREEMPTED", "", FAILED, "PREEMPTED"),
    ("CANCELLED", "None", FAILED, "CANCELLED"),
    ("CANCELLED by 1000", "", FAILED, "CANCELLED by 1000"),  # sacct's spelling
    ("BOOT_FAIL", "", FAILED, "BOOT_FAIL"),
    ("DEADLINE", "", FAILED, "DEADLINE"),
    ("SPECIAL_EXIT", "", FAILED, "SPECIAL_EXIT"),
])
def test_every_slurm_state_maps_to_an_executor_state(state, reason, expected, detail):
    status = job_status(state, reason)
    assert (status.state, status.detail) == (expected, detail)


def test_an_unknown_state_keeps_the_job_waiting_instead_of_running_it_twice():
    status = job_status("SOME_FUTURE_STATE", "Why")
    assert status.state == RUNNING and "SOME_FUTURE_STATE (Why)" in status.detail and "does not know" in status.detail


def test_sbatch_options_follow_the_flags(tmp_path):
    job = request(tmp_path, neighbor="cd" * 32)
    plain = sbatch_command(SlurmSettings(gpus_per_node=0, signal_seconds=0, time=""), job)
    assert plain[:2] == ["sbatch", "--parsable"] and f"--job-name={job.token}" in plain
    assert f"--output={job.log}" in plain and "--open-mode=append" in plain and "--requeue" in plain
    assert not any(option.startswith(("--gres", "--signal", "--time", "--partition", "--account", "--qos")) for option in plain)
    assert plain[-4:] == [str(DEFAULT_SCRIPT), str(job.run_dir), HASH, "cd" * 32]

    settings = SlurmSettings(partition="gpu", account="proj42", qos="long", gpus_per_node=2, cpus_per_task=16, mem="64G",
                             time="2-00:00:00", signal_seconds=600,
                             extra=("#SBATCH --constraint=a100", "--exclusive --mail-type=END"))
    full = sbatch_command(settings, request(tmp_path))
    for option in ("--partition=gpu", "--account=proj42", "--qos=long", "--gres=gpu:2", "--cpus-per-task=16", "--mem=64G",
                   "--time=2-00:00:00", "--signal=B:USR1@600", "--constraint=a100", "--exclusive", "--mail-type=END"):
        assert option in full
    assert full[-3:] == [str(DEFAULT_SCRIPT), str(tmp_path / "run"), HASH]  # no neighbour: two arguments
    percent = JobRequest(tmp_path, HASH, 1, None, tmp_path / "100%" / "job.log", "t")
    assert f"--output={tmp_path}/100%%/job.log" in sbatch_command(SlurmSettings(), percent)  # sbatch would expand %j ...


def test_flags_are_checked(tmp_path):
    def settings(*flags: str) -> SlurmSettings:
        return settings_from_args(run_boshnas.parse_args(["--dataset_file", "x", *flags]))

    parsed = settings("--slurm_gpus_per_node", "0", "--slurm_extra=--exclusive", "--slurm_extra", "#SBATCH -C a100")
    assert parsed.gpus_per_node == 0 and parsed.extra == ("--exclusive", "#SBATCH -C a100") and parsed.script == DEFAULT_SCRIPT
    assert settings().gpus_per_node == 2  # the paper's nodes
    with pytest.raises(SlurmError, match="--slurm_gpus_per_node must be at least 0"):
        settings("--slurm_gpus_per_node", "-1")
    with pytest.raises(SlurmError, match="--slurm_signal_seconds 300 is not shorter than --slurm_time 00:05:00"):
        settings("--slurm_time", "00:05:00")
    with pytest.raises(SlurmError, match="no such file"):
        settings("--slurm_script", str(tmp_path / "missing.sbatch"))
    assert [time_limit_seconds(t) for t in ("90", "1:30", "01:00:00", "2-0", "1-2:03", "1-0:0:5", "UNLIMITED")] == \
        [5400, 90, 3600, 172800, 93780, 86405, None]


def test_missing_slurm_commands_say_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch, squeue, scontrol is not on PATH; run the search on a submit"):
        SlurmExecutor.from_args(run_boshnas.parse_args(["--dataset_file", "x", "--executor", "slurm"]))


README_LINE = ("JobId=24 JobName=my job UserId=root(0) JobState=FAILED Reason=launch failed requeued held Dependency=(null) "
               "Requeue=1 Restarts=0 AllocNode:Sid=localhost:18156 Command=/tmp/sl/bad.sh WorkDir=/tmp/sl Power=")


class FakeSlurm:
    """Answers squeue, sacct and scontrol like a cluster whose jobs 1-5 are in different places (or where SLURM is down)."""

    def __init__(self, accounting: bool = True, down: bool = False):
        self.accounting, self.down, self.calls = accounting, down, []

    def __call__(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        self.calls.append(command[0])
        out, err, code = "", "", 0
        if self.down:
            err, code = f"{command[0]}: error: Unable to contact slurm controller (connect failure)", 1
        elif command[0] == "squeue":
            out = "1|RUNNING|None\n"
        elif command[0] == "sacct":
            out, err, code = ("2|CANCELLED by 0\n3|TIMEOUT\n", "", 0) if self.accounting else \
                ("", "Slurm accounting storage is disabled", 1)
        elif command[-1] == "4" or (command[-1] == "2" and not self.accounting):
            out = README_LINE.replace("JobId=24", f"JobId={command[-1]}")
        else:
            err, code = "slurm_load_jobs error: Invalid job id specified", 1
        return subprocess.CompletedProcess(command, code, out, err)


def test_jobs_squeue_forgot_are_looked_up_in_sacct_then_scontrol(monkeypatch):
    monkeypatch.setattr("flexibert.cluster.slurm.shutil.which", lambda tool: f"/usr/bin/{tool}")
    executor = SlurmExecutor(SlurmSettings(), poll_interval=0)
    executor._run = fake = FakeSlurm()
    statuses = executor.poll(["1", "2", "3", "4", "5"])
    assert {job_id: (s.state, s.detail) for job_id, s in statuses.items()} == {
        "1": (RUNNING, "RUNNING"), "2": (FAILED, "CANCELLED by 0"), "3": (FAILED, "TIMEOUT"),
        "4": (FAILED, "FAILED (launch failed requeued held)"),
        "5": (LOST, "SLURM no longer knows job 5 (it ended and was purged, and sacct has no record)")}
    assert fake.calls == ["squeue", "sacct", "scontrol", "scontrol"]  # one squeue and one sacct call for all jobs

    executor._run = FakeSlurm(accounting=False)
    assert executor.poll(["2"])["2"].detail == "FAILED (launch failed requeued held)"


def test_an_unreachable_slurm_keeps_the_last_known_states(monkeypatch, capsys):
    executor = SlurmExecutor(SlurmSettings(), poll_interval=0)
    executor._run = FakeSlurm()
    executor.poll(["1"])
    executor._run = FakeSlurm(down=True)
    statuses = executor.poll(["1", "7"])
    assert statuses["1"] == executor._last["1"] and statuses["1"].state == RUNNING
    assert statuses["7"].state == PENDING and "did not answer" in statuses["7"].detail
    assert "warning: squeue failed: squeue: error: Unable to contact slurm controller" in capsys.readouterr().err
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        executor.find("some-token")


def fake_tools(tmp_path: Path) -> dict[str, str]:
    """A fake Python and scontrol that record their calls.

    The Python sleeps FAKE_SLEEP seconds (on SIGTERM it takes 1 s to "save", records it and exits 143), then exits
    FAKE_EXIT. Like SLURM, ``scontrol requeue`` sends SIGTERM to the running stage.
    """
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python").write_text(
        '#!/bin/bash\necho "python $*" >> "$CALLS"\necho $$ > "$CALLS.pid"\n'
        'if [ "${FAKE_SLEEP:-0}" != 0 ]; then\n'
        '    trap \'kill $sleeper; sleep 1; echo "stage saved" >> "$CALLS"; exit 143\' TERM\n'
        '    sleep "$FAKE_SLEEP" & sleeper=$!\n    wait $sleeper\nfi\n'
        'exit "${FAKE_EXIT:-0}"\n')
    (tools / "scontrol").write_text('#!/bin/bash\necho "scontrol $*" >> "$CALLS"\n'
                                    'if [ "$1" = requeue ]; then kill -TERM "$(cat "$CALLS.pid")"; fi\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{tools}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"), "FLEXIBERT_PYTHON": str(tools / "python"),
            "FLEXIBERT_REPO": str(REPO), "FLEXIBERT_SETUP": "", "FLEXIBERT_GPUS": "0", "FLEXIBERT_ATTEMPT": "2"}


def run_batch_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEFAULT_SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_batch_script_runs_one_process_or_torchrun_per_stage(tmp_path):
    env = fake_tools(tmp_path)
    calls = Path(env["CALLS"])
    job = f"-m flexibert.candidate_job --run_dir RUN --model_hash {HASH} --attempt 2"

    assert run_batch_script(env, "RUN", HASH).returncode == 0
    assert calls.read_text().splitlines() == [f"python {job} --stage all"]

    calls.unlink()
    assert run_batch_script({**env, "FLEXIBERT_GPUS": "2"}, "RUN", HASH, "NB").returncode == 0
    torchrun = "python -m torch.distributed.run --standalone --nproc_per_node 2"
    assert calls.read_text().splitlines() == [f"{torchrun} {job} --neighbor NB --stage pretrain",
                                              f"{torchrun} {job} --neighbor NB --stage finetune",
                                              f"python {job} --neighbor NB --stage collect"]

    calls.unlink()
    failed = run_batch_script({**env, "FLEXIBERT_GPUS": "2", "FAKE_EXIT": "3"}, "RUN", HASH)
    assert failed.returncode == 3 and len(calls.read_text().splitlines()) == 1  # a failed stage ends the job

    calls.unlink()
    setup = run_batch_script({**env, "FLEXIBERT_SETUP": "echo set up; false"}, "RUN", HASH)
    assert setup.returncode == 1 and "the setup command failed" in setup.stdout and not calls.exists()

    assert "sbatch --gres=gpu:2" in run_batch_script(env, "--help").stdout
    usage = run_batch_script(env, "only-one-argument")
    assert usage.returncode == 2 and "RUN_DIR MODEL_HASH [NEIGHBOR_HASH]" in usage.stderr


def start_and_signal(env: dict[str, str], sigterm: bool = False) -> subprocess.CompletedProcess:
    """Start the script with a stage that sleeps; once the stage runs, send the script USR1 (as SLURM does before the
    time limit), or SIGTERM to the script and the stage (as SLURM does on scancel, pre-emption or the time limit)."""
    stage_pid = Path(env["CALLS"] + ".pid")
    stage_pid.unlink(missing_ok=True)
    process = subprocess.Popen(["bash", str(DEFAULT_SCRIPT), "RUN", HASH], env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not stage_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    if sigterm:
        process.send_signal(signal.SIGTERM)
        os.kill(int(stage_pid.read_text()), signal.SIGTERM)
    else:
        process.send_signal(signal.SIGUSR1)
    started = time.monotonic()
    out, _ = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, f"{out}\nseconds after USR1: {time.monotonic() - started:.1f}")


def test_usr1_requeues_at_most_max_requeues_times_and_the_script_outlives_the_saving_stage(tmp_path):
    env = {**fake_tools(tmp_path), "SLURM_JOB_ID": "123", "FLEXIBERT_MAX_REQUEUES": "2", "FAKE_SLEEP": "30"}
    calls = Path(env["CALLS"])
    requeued = start_and_signal({**env, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0 and "requeueing job 123 (requeue 2 of 2)" in requeued.stdout
    # The script outlives the stage until it has saved (SLURM kills what a batch script leaves behind), but no longer.
    assert calls.read_text().splitlines()[-2:] == ["scontrol requeue 123", "stage saved"]
    assert "the stage has stopped" in requeued.stdout
    assert 1 <= float(requeued.stdout.rsplit(" ", 1)[1]) < 10

    calls.unlink()
    terminated = start_and_signal(env, sigterm=True)
    assert terminated.returncode == 143 and calls.read_text().splitlines()[-1] == "stage saved"
    assert "waiting for the stage to save a checkpoint" in terminated.stdout and "scontrol" not in calls.read_text()

    calls.unlink()
    left = start_and_signal({**env, "SLURM_RESTART_COUNT": "2", "FAKE_SLEEP": "2", "FAKE_EXIT": "0"})
    assert left.returncode == 0 and "letting it time out" in left.stdout and "done:" in left.stdout  # the stage ran to its end
    assert "scontrol" not in calls.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# On the local SLURM cluster
# ---------------------------------------------------------------------------------------------------------------------

MODELS = [{"l": 2, "o": ["sa", "sa"], "h": [h, h], "n": [n, n], "f": [[f], [f]], "p": [p, p]}
          for h in (64, 128) for n in (2, 4) for f, p in ((128, "sdp"), (256, "sdp"), (256, "wma"))]


@pytest.fixture(scope="module")
def search_files(tmp_path_factory) -> dict[str, Path]:
    """A library of 12 small models and its synthetic benchmark file."""
    work = tmp_path_factory.mktemp("slurm_search")
    library = Library.from_model_dicts(MODELS)
    library.build_embeddings(embedding_size=4, num_neighbors=4)
    library.save(work / "library.json")
    (work / "benchmark.json").write_text(json.dumps({"entries": synthetic_scores(library, seed=0)}))
    return {"library": work / "library.json", "benchmark": work / "benchmark.json"}


def search_argv(files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return ["--dataset_file", str(files["library"]), "--benchmark_file", str(files["benchmark"]), "--run_dir", str(run_dir),
            "--executor", "slurm", "--poll_interval", "1", "--slurm_gpus_per_node", "0", "--strategy", "random", *extra]


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in Journal(run_dir).read() if e["event"] == kind]


def start_markers(run_dir: Path) -> dict[str, int]:
    return {folder.name: len(list((folder / "starts").iterdir())) for folder in (run_dir / "models").iterdir()}


def slurm(env: dict[str, str], *command: str) -> str:
    proc = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout


def slurm_jobs_of(env: dict[str, str], run_dir: Path) -> dict[str, str]:
    """{job id: state} of every SLURM job whose name is a token of this run's journal."""
    tokens = {e["token"] for e in events(run_dir, "submit")}
    lines = slurm(env, "squeue", "-h", "-t", "all", "-o", "%i|%j|%T").splitlines()
    return {job_id: state for job_id, name, state in (line.split("|") for line in lines) if name in tokens}


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def controller(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flexibert.run_boshnas", *argv], env={**os.environ, **env}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_executor_submits_finds_polls_and_cancels_slurm_jobs(slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    failing = SlurmExecutor(SlurmSettings(gpus_per_node=0, time="5", signal_seconds=0, python="false"), poll_interval=1)
    job = request(tmp_path)
    job_id = failing.submit(job)
    assert job_id.isdigit() and failing.find(job.token) == job_id and failing.find("no-such-job-name") is None
    statuses = wait_until(lambda: (s := failing.poll([job_id, "99999999"]))[job_id].state != PENDING and
                          s[job_id].state != RUNNING and s, 60, "the failing job to end")
    assert (statuses[job_id].state, statuses[job_id].detail) == (FAILED, "FAILED (NonZeroExitCode)")
    assert statuses["99999999"].state == LOST and "no longer knows job 99999999" in statuses["99999999"].detail
    assert job.log.read_text().startswith("# submitted ") and "running: false -m flexibert.candidate_job" in job.log.read_text()

    sleeping = SlurmExecutor(SlurmSettings(gpus_per_node=0, time="5", signal_seconds=0, setup="sleep 60"), poll_interval=1)
    job_id = sleeping.submit(request(tmp_path))
    wait_until(lambda: sleeping.poll([job_id])[job_id].state == RUNNING, 30, "the job to run")
    sleeping.cancel([job_id])
    assert wait_until(lambda: sleeping.poll([job_id])[job_id].detail.startswith("CANCELLED"), 30, "the cancel")

    refused = SlurmExecutor(SlurmSettings(partition="nope", gpus_per_node=0), poll_interval=1)
    with pytest.raises(SlurmError, match="(?s)sbatch refused the job.*SLURM said:\nsbatch: error: invalid partition specified: nope"):
        refused.submit(request(tmp_path))


@pytest.mark.slow
def test_search_runs_to_the_end_on_slurm(search_files, slurm_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    run_dir = tmp_path / "run"
    state = run_boshnas.main(search_argv(search_files, run_dir, "--budget", "4", "--num_init", "2", "--max_concurrent", "2",
                                         "--slurm_time", "00:05:00", "--slurm_signal_seconds", "60"))
    assert len(state.finished) == 4 and state.stopped == "budget" and not state.failed()
    benchmark = {e["model_hash"]: e["scores"]["glue"] for e in json.loads(search_files["benchmark"].read_text())["entries"]}
    assert state.scores() == {h: benchmark[h] for h in state.finished}
    launched = [e["job_id"] for e in events(run_dir, "launched")]
    assert len(launched) == 4 and all(job_id.isdigit() for job_id in launched)
    assert set(slurm_jobs_of(slurm_env, run_dir)) == set(launched)
    assert set(slurm_jobs_of(slurm_env, run_dir).values()) == {"COMPLETED"}
    assert start_markers(run_dir) == dict.fromkeys(state.finished, 1)
    for submit in events(run_dir, "submit"):  # SLURM wrote the job's output to the journaled log
        assert "running: " in Path(submit["log"]).read_text()


@pytest.mark.slow
def test_killed_controller_adopts_its_slurm_jobs_and_submits_nothing_twice(search_files, slurm_env, tmp_path):
    """Three jobs at once on a node with room for two: the controller is killed while two run and one waits.

    The two running jobs finish while no controller runs; the restarted one must take their results and adopt the
    third job (still pending or running) instead of submitting anything again.
    """
    run_dir = tmp_path / "run"
    argv = search_argv(search_files, run_dir, "--budget", "3", "--num_init", "3", "--max_concurrent", "3",
                       "--slurm_time", "00:05:00", "--slurm_signal_seconds", "60", "--slurm_setup", "sleep 5")
    process = controller(argv, slurm_env)
    try:
        wait_until(lambda: len(events(run_dir, "launched")) == 3 and
                   sorted(slurm_jobs_of(slurm_env, run_dir).values()) == ["PENDING", "RUNNING", "RUNNING"], 120,
                   "two running jobs and a pending one")
    finally:
        process.kill()
        process.wait()
    wait_until(lambda: list(slurm_jobs_of(slurm_env, run_dir).values()).count("COMPLETED") == 2, 120, "two jobs to finish")
    in_flight = [job_id for job_id, state in slurm_jobs_of(slurm_env, run_dir).items() if state in ("PENDING", "RUNNING")]
    assert len(in_flight) == 1, "the third job is still in flight when the controller is restarted"
    out = finish(controller(argv, slurm_env), 300)

    assert "resuming" in out and "3 in flight" in out
    state = SearchState.replay(Journal(run_dir).read())
    assert len(state.finished) == 3 and state.stopped == "budget" and not state.failed()
    submits = [e["model_hash"] for e in events(run_dir, "submit")]
    assert len(submits) == len(set(submits)) == 3  # one submission per model
    launched = {e["job_id"] for e in events(run_dir, "launched")}
    assert set(slurm_jobs_of(slurm_env, run_dir)) == launched and len(launched) == 3  # one SLURM job per submission
    assert in_flight[0] in launched
    assert start_markers(run_dir) == dict.fromkeys(state.finished, 1)


@pytest.mark.slow
def test_scancel_leads_to_a_retry_and_a_job_at_its_time_limit_requeues_and_resumes(search_files, slurm_env, tmp_path):
    """One search, two jobs at once: the first is cancelled with scancel, the second reaches its time limit.

    Only the first run of a first attempt is slow (its setup sleeps past the time limit). SLURM sends USR1 up to ~30 s
    early, i.e. at once with a one-minute limit, so later runs are warned too: --slurm_max_requeues 1 lets them finish.
    """
    run_dir = tmp_path / "run"
    slow_first_run = 'if [ "$FLEXIBERT_ATTEMPT" = 1 ] && [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 150 & wait $!; fi'
    process = controller(search_argv(search_files, run_dir, "--budget", "2", "--num_init", "2", "--max_concurrent", "2",
                                     "--slurm_time", "00:01:00", "--slurm_signal_seconds", "40", "--slurm_max_requeues", "1",
                                     "--slurm_setup", slow_first_run),
                         slurm_env)
    try:
        wait_until(lambda: len(events(run_dir, "launched")) == 2 and
                   set(slurm_jobs_of(slurm_env, run_dir).values()) == {"RUNNING"}, 120, "two running jobs")
        cancelled, timed = events(run_dir, "launched")
        slurm(slurm_env, "scancel", cancelled["job_id"])
        out = finish(process, 300)
    finally:
        process.kill()

    state = SearchState.replay(Journal(run_dir).read())
    assert len(state.finished) == 2 and not state.failed(), out
    retried = state.candidates[cancelled["model_hash"]]
    assert [a.number for a in retried.attempts] == [1, 2]
    failure = next(e for e in events(run_dir, "attempt_failed") if e["model_hash"] == retried.model_hash)
    assert "CANCELLED" in failure["reason"] and "job-1.log" in failure["reason"]
    assert retried.attempts[1].job_id != cancelled["job_id"]

    requeued = state.candidates[timed["model_hash"]]
    assert len(requeued.attempts) == 1 and requeued.attempts[0].job_id == timed["job_id"]
    log = Path(requeued.attempts[0].log).read_text()
    assert "time limit near: requeueing job" in log and "restart 1:" in log and log.count("running: ") == 1
    job = slurm(slurm_env, "scontrol", "show", "job", "-o", timed["job_id"])
    assert "JobState=COMPLETED" in job and "Restarts=1" in job
    # The slow first runs never reached the candidate job; the retry may have been requeued once after it started.
    assert len(list((run_dir / "models" / requeued.model_hash / "starts").iterdir())) == 1
    assert {marker.name[:9] for marker in (run_dir / "models" / retried.model_hash / "starts").iterdir()} == {"attempt2-"}


@pytest.fixture(scope="module")
def training_files(tmp_path_factory) -> dict[str, Path]:
    """A tokenizer and a pretraining dataset from 1,000 lines of WikiText-2, and a library of two tiny models."""
    wikitext = SHARED / "wikitext-2" / "wiki.train.tokens"
    if not wikitext.is_file() or not (SHARED / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"real WikiText-2 and GLUE SST-2 not found under {SHARED} (the shared data folder beside the checkout)")
    from flexibert import prepare_pretrain_dataset, save_roberta_tokenizer

    work = tmp_path_factory.mktemp("slurm_training")
    corpus = work / "wiki.slice.tokens"
    corpus.write_text("".join(wikitext.read_text(encoding="utf-8").splitlines(keepends=True)[:1000]), encoding="utf-8")
    save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "1000", "--output_dir", str(work / "tokenizer")])
    prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(work / "tokenizer"), "--max_seq_length", "64",
                                   "--cache_dir", str(work / "hf_cache"), "--output_dir", str(work / "dataset")])
    library = Library.from_model_dicts([MODELS[0], MODELS[1]])
    library.build_embeddings(embedding_size=2, num_neighbors=1)
    library.save(work / "library.json")
    return {"library": work / "library.json", "tokenizer": work / "tokenizer", "dataset": work / "dataset"}


def training_search_argv(training_files: dict[str, Path], run_dir: Path, processes: int, pretrain_steps: int,
                         pretrain_args: str = "", budget: int = 1) -> list[str]:
    """A search whose SLURM jobs, one at a time, pretrain on WikiText-2 and fine-tune on 200 SST-2 examples, with
    FLEXIBERT_GPUS training processes per stage (torchrun when 2: CPU processes over gloo, as on a 2-GPU node)."""
    return [
        "--dataset_file", str(training_files["library"]), "--run_dir", str(run_dir), "--strategy", "random", "--budget", str(budget),
        "--num_init", "1", "--max_retries", "0", "--task", "sst2", "--glue_dir", str(SHARED / "glue"),
        "--tokenizer", str(training_files["tokenizer"]), "--pretrain_dataset_dir", str(training_files["dataset"]),
        "--pretrain_steps", str(pretrain_steps), "--pretrain_args", "--max_seq_length 64 --per_device_train_batch_size 8 "
        f"--warmup_steps 2 --save_steps 10 --learning_rate 1e-3 --max_eval_samples 32 {pretrain_args}",
        "--finetune_args", "--max_train_samples 200 --max_eval_samples 100 --num_train_epochs 1 --max_seq_length 64 "
        "--per_device_train_batch_size 16",
        "--executor", "slurm", "--poll_interval", "1", "--slurm_gpus_per_node", "0", "--slurm_time", "00:10:00",
        "--slurm_setup", f"export OMP_NUM_THREADS=1 FLEXIBERT_GPUS={processes}"]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "torchrun-2-cpu-processes-and-a-warm-start"])
def test_models_pretrained_and_fine_tuned_through_slurm_reach_the_leaderboard(training_files, slurm_env, tmp_path, monkeypatch,
                                                                               processes):
    """Under torchrun a second model is also trained, warm-started by weight transfer from the first."""
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    run_dir = tmp_path / "run"
    state = run_boshnas.main(training_search_argv(training_files, run_dir, processes, pretrain_steps=20, budget=processes))
    assert len(state.finished) == processes, [log.read_text()[-3000:] for log in (run_dir / "models").glob("*/job-*.log")]
    for model_hash in state.finished:
        results = json.loads((run_dir / "models" / model_hash / "results.json").read_text())
        assert results["source"] == "training" and results["pretrain"]["world_size"] == processes
        sst2 = json.loads((run_dir / "models" / model_hash / "glue" / "sst2" / "results.json").read_text())
        assert sst2["global_step"] == math.ceil(200 / (16 * processes))  # fine-tuning is data-parallel too
        assert 0 <= results["glue_score"] <= 100 and results["glue_score"] == state.candidates[model_hash].score
        assert f"{model_hash[:12]}" in (run_dir / "leaderboard.md").read_text()
    first = json.loads((run_dir / "models" / state.finished[0] / "results.json").read_text())
    assert first["pretrain"]["global_step"] == 20 and first["pretrain"]["init_from"] is None
    if processes == 2:
        warm = json.loads((run_dir / "models" / state.finished[1] / "results.json").read_text())
        assert state.candidates[state.finished[1]].neighbor == state.finished[0]
        library = Library.load(training_files["library"])
        closeness = model_overlap(library.model_dict(state.finished[1]), library.model_dict(state.finished[0]))
        assert warm["pretrain"]["global_step"] == warm_start_steps(closeness, 20) < 20  # the closeness rule's steps
        assert warm["pretrain"]["transferred_fraction"] > 0.5
    launched = [event["job_id"] for event in events(run_dir, "launched")]
    assert slurm_jobs_of(slurm_env, run_dir) == dict.fromkeys(launched, "COMPLETED")


@pytest.mark.slow
def test_a_torchrun_job_warned_of_its_time_limit_saves_at_the_signal_and_its_requeued_run_resumes(training_files, slurm_env,
                                                                                                  tmp_path, monkeypatch):
    """USR1 to the batch shell while torchrun pretrains (what --signal=B:USR1@S sends before the time limit; the
    time-limit test above shows SLURM sending it, here scancel --batch sends it at a chosen moment): the job requeues
    itself, SLURM's SIGTERM makes both ranks save at one step while the script waits, and the second run resumes there."""
    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    run_dir = tmp_path / "run"

    def warn_once_training_runs() -> None:
        def training_log() -> str | None:
            logs = list((run_dir / "models").glob("*/job-1.log"))
            text = logs[0].read_text(errors="replace") if logs else ""
            return text if text.count("'loss'") >= 5 else None  # a loss is logged every step
        wait_until(training_log, 240, "pretraining to log its first steps", interval=0.2)
        slurm(slurm_env, "scancel", "--batch", "--signal=USR1", events(run_dir, "launched")[0]["job_id"])

    warner = threading.Thread(target=warn_once_training_runs, daemon=True)
    warner.start()
    state = run_boshnas.main(training_search_argv(training_files, run_dir, processes=2, pretrain_steps=80,
                                                  pretrain_args="--logging_steps 1 --save_steps 1000"))
    warner.join(timeout=5)
    log = next((run_dir / "models").glob("*/job-1.log")).read_text(errors="replace")
    assert len(state.finished) == 1, log[-5000:]
    model_hash = state.finished[0]
    saved = [int(step.replace(",", "")) for step in re.findall(r"stopped by SIGTERM[^:]*: checkpoint saved at step ([\d,]+)", log)]
    assert len(saved) == 2 and saved[0] == saved[1] and 0 < saved[0] < 80, log[-5000:]  # both ranks, one step
    assert "requeueing job" in log and "the stage has stopped" in log
    pretrained = json.loads((run_dir / "models" / model_hash / "pretrained" / "pretrain_results.json").read_text())
    assert pretrained["resumed_from_step"] == saved[0] and pretrained["global_step"] == 80 and pretrained["world_size"] == 2
    launched = events(run_dir, "launched")
    assert len(events(run_dir, "submit")) == 1 and len(launched) == 1
    job = slurm(slurm_env, "scontrol", "show", "job", "-o", launched[0]["job_id"])
    assert "JobState=COMPLETED" in job and "Restarts=1" in job
