"""Access to the local single-node SLURM cluster (slurm/local_cluster.sh) for tests.

    from slurm_cluster import slurm_env  # {"SLURM_CONF": ...}, the cluster held by one test at a time

    def test_x(slurm_env):
        subprocess.run(["sbatch", ...], env={**os.environ, **slurm_env})

The first use in a test session runs ``slurm/local_cluster.sh start`` (installs slurm-wlm/munge with apt-get when
missing, needs root); later uses reuse the result. Tests that cannot have a cluster (not root, no apt-get, start
failed, or FLEXIBERT_SKIP_SLURM=1) are skipped with the script's error output in the reason. The cluster is left
running after the session on purpose: starting it takes seconds, but tearing it down buys nothing in CI, and a
developer can run ``slurm/local_cluster.sh stop`` at any time.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "local_cluster.sh"
DEFAULT_STATE_DIR = "/tmp/flexibert-slurm"
START_TIMEOUT_S = 900  # a first start may apt-get install slurm-wlm

_outcome: tuple[bool, dict[str, str] | str] | None = None


def state_dir() -> Path:
    return Path(os.environ.get("FLEXIBERT_SLURM_DIR", DEFAULT_STATE_DIR))


def _tail(text: str, limit: int = 3000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _start() -> tuple[bool, dict[str, str] | str]:
    if os.environ.get("FLEXIBERT_SKIP_SLURM", "") not in ("", "0"):
        return False, "FLEXIBERT_SKIP_SLURM is set"
    if not SCRIPT.is_file():
        return False, f"{SCRIPT} is missing"
    directory = state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / "start.lock", "w")
    except OSError as exc:
        return False, f"cannot use the SLURM state directory {directory}: {exc}"
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one start at a time
        try:
            proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return False, f"slurm/local_cluster.sh start timed out after {START_TIMEOUT_S}s: {_tail(out)}"
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        why = "not root" if os.geteuid() != 0 else "start failed"
        return False, f"local SLURM cluster unavailable ({why}, exit {proc.returncode}): {_tail(output)}"
    conf = None
    for line in proc.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            conf = line.split("=", 1)[1].strip()
    if not conf:
        return False, f"slurm/local_cluster.sh start printed no 'export SLURM_CONF=' line: {_tail(output)}"
    return True, {"SLURM_CONF": conf}


def ensure_cluster() -> dict[str, str]:
    """Start the local cluster once per session; return the environment variables SLURM commands need.

    Calls pytest.skip (with the reason, including the script's output) when the cluster cannot be had.
    """
    global _outcome
    if _outcome is None:
        _outcome = _start()
    ok, value = _outcome
    if not ok:
        pytest.skip(str(value))
    assert isinstance(value, dict)
    return dict(value)


@pytest.fixture
def slurm_env():
    """Environment additions for subprocesses that talk to the local cluster: ``env={**os.environ, **slurm_env}``.

    The test holds the cluster alone while it runs: under pytest-xdist (the README's test command runs two workers)
    the other worker's SLURM test waits here, because these tests time jobs, signals and requeues against a node
    whose two CPUs are theirs. The cluster itself is started once per session (``ensure_cluster``).
    """
    env = ensure_cluster()
    with open(state_dir() / "test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield env
