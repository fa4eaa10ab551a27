"""End-to-end checks of the local SLURM cluster (slurm/local_cluster.sh) the search controller is tested against.

They pin the behaviours the controller relies on: sbatch --parsable, scontrol show job -o states of finished jobs,
early-warning signals before the time limit, scancel, scontrol requeue, and what squeue/sacct do
without accounting storage. See slurm/README.md.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import slurm_cluster

REPO = slurm_cluster.REPO
# The session fixture that starts the cluster; bound here (not `from ... import`) so pytest finds it and ruff does
# not read the test arguments of the same name as redefinitions of an unused import (F811).
slurm_env = slurm_cluster.slurm_env

pytestmark = pytest.mark.slow

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def submit(env: dict[str, str], directory: Path, body: str, *sbatch_args: str) -> int:
    script = directory / "job.sh"
    script.write_text("#!/bin/bash\n" + body)
    out = run(["sbatch", "--parsable", f"--chdir={directory}", f"--output={directory}/out.txt", *sbatch_args, str(script)], env)
    job_id = out.stdout.strip()
    assert job_id.isdigit(), f"sbatch --parsable printed {out.stdout!r}"
    return int(job_id)


def show_job(env: dict[str, str], job_id: int) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict (one line of space-separated Key=Value; values here have no spaces)."""
    line = run(["scontrol", "show", "job", "-o", str(job_id)], env).stdout.strip()
    return dict(token.split("=", 1) for token in line.split() if "=" in token)


def wait_for(env: dict[str, str], job_id: int, states: set[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        job = show_job(env, job_id)
        if job["JobState"] in states:
            return job
        if job["JobState"] in TERMINAL or time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['JobState']} (Reason={job.get('Reason')}), waited for {states}")
        time.sleep(0.5)


def wait_for_file(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text()):
            return content
        time.sleep(0.5)
    raise AssertionError(f"{path} has no {text!r} after {timeout}s: {path.read_text() if path.exists() else '(missing)'}")


def test_status_reports_the_debug_partition(slurm_env):
    proc = run(["bash", str(REPO / "slurm" / "local_cluster.sh"), "status"], slurm_env)
    partition_line = next(line for line in proc.stdout.splitlines() if line.startswith("debug*"))
    assert partition_line.split()[1] == "up", proc.stdout
    # Any state of a node that answers: "comp"(leting) is normal while a job from an earlier run is being cleaned up.
    assert partition_line.split()[4] in {"idle", "mix", "alloc", "comp"}, proc.stdout


def test_sbatch_job_completes(slurm_env, tmp_path):
    job_id = submit(slurm_env, tmp_path, 'echo "hello from job $SLURM_JOB_ID on $SLURM_JOB_PARTITION"\n')
    job = wait_for(slurm_env, job_id, {"COMPLETED"}, timeout=30)
    assert job["ExitCode"] == "0:0"
    assert job["Partition"] == "debug"
    assert (tmp_path / "out.txt").read_text() == f"hello from job {job_id} on debug\n"

    # Finished jobs: squeue lists them only with -t all; a plain `squeue -j ID` prints nothing and exits 0.
    assert run(["squeue", "-h", "-j", str(job_id), "-o", "%i|%T"], slurm_env).stdout == ""
    assert run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%i|%T"], slurm_env).stdout.strip() == f"{job_id}|COMPLETED"
    # No accounting storage: sacct fails; the controller must fall back to scontrol/squeue.
    sacct = run(["sacct", "-n", "-P", "-j", str(job_id), "-o", "JobID,State,ExitCode"], slurm_env, check=False)
    assert sacct.returncode == 1
    assert "Slurm accounting storage is disabled" in sacct.stderr
    # Unknown job ids are errors for scontrol and squeue.
    unknown = run(["scontrol", "show", "job", "-o", "999999"], slurm_env, check=False)
    assert unknown.returncode == 1 and "Invalid job id specified" in unknown.stderr


def test_failing_job_is_failed_with_its_exit_code(slurm_env, tmp_path):
    job_id = submit(slurm_env, tmp_path, "echo bad >&2\nexit 3\n")
    job = wait_for(slurm_env, job_id, {"FAILED"}, timeout=30)
    assert job["ExitCode"] == "3:0"
    assert job["Reason"] == "NonZeroExitCode"


def test_early_warning_signal_comes_before_the_time_limit(slurm_env, tmp_path):
    """--signal=B:USR1@S reaches the batch shell well before the limit; the job then ends itself. What follows at the
    limit (SIGTERM, then TIMEOUT) is what scancel does too, and the search's own time-limit test sees SLURM requeue a
    job that was warned; waiting here for the kill would only add a minute to the suite."""
    body = (
        "trap 'echo \"USR1 $(date +%s)\" >> marker.txt; exit 0' USR1\n"
        "for _ in $(seq 300); do sleep 1 & wait $!; done\n"  # `wait` lets bash run the trap at once
    )
    job_id = submit(slurm_env, tmp_path, body, "--time=00:01:00", "--signal=B:USR1@50")
    # Due 10 s after the start, but slurmctld checks about every 30 s and may send it early, even within a second of
    # the start: so the job may be over before a poll sees it running, and the delay is read from SLURM's clock.
    marker = wait_for_file(tmp_path / "marker.txt", "USR1", timeout=90)
    job = wait_for(slurm_env, job_id, {"COMPLETED"}, timeout=30)
    signalled = int(marker.split()[1]) - datetime.fromisoformat(job["StartTime"]).timestamp()
    assert signalled < 50 and job["ExitCode"] == "0:0", (signalled, job)


def test_scancel_running_job(slurm_env, tmp_path):
    job_id = submit(slurm_env, tmp_path, "echo started\nsleep 300\n")
    wait_for(slurm_env, job_id, {"RUNNING"}, timeout=30)
    run(["scancel", str(job_id)], slurm_env)
    job = wait_for(slurm_env, job_id, {"CANCELLED"}, timeout=30)
    assert job["ExitCode"] == "0:15"


def test_scontrol_requeue_runs_the_job_again(slurm_env, tmp_path):
    body = 'echo "run restart=${SLURM_RESTART_COUNT:-0}"\nsleep 300\n'
    job_id = submit(slurm_env, tmp_path, body, "--requeue", "--open-mode=append")
    out = tmp_path / "out.txt"
    try:
        wait_for(slurm_env, job_id, {"RUNNING"}, timeout=30)
        wait_for_file(out, "run restart=0", timeout=30)
        run(["scontrol", "requeue", str(job_id)], slurm_env)
        job = show_job(slurm_env, job_id)
        # Right after the requeue the job is COMPLETING (the old run is killed), then PENDING with Reason=BeginTime.
        assert job["JobState"] in {"COMPLETING", "PENDING", "REQUEUED", "RUNNING"}, job["JobState"]
        content = wait_for_file(out, "run restart=1", timeout=60)  # cred_expire=10: pending ~10 s (Reason=BeginTime)
        assert "DUE TO JOB REQUEUE" in content
        job = show_job(slurm_env, job_id)
        assert job["JobState"] == "RUNNING" and job["Restarts"] == "1"
    finally:
        run(["scancel", str(job_id)], slurm_env, check=False)
