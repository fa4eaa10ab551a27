"""Candidate jobs as SLURM batch jobs (``run_boshnas.py --executor slurm``), driven only through SLURM's own commands.

    python -m flexibert.run_boshnas --dataset_file LIB.json --executor slurm --slurm_partition gpu \\
        --slurm_gpus_per_node 2 --slurm_cpus_per_task 16 --slurm_mem 64G --slurm_time 24:00:00 \\
        --slurm_setup 'module load anaconda3; conda activate flexibert' ...

Each job is ``sbatch --parsable slurm/candidate_job.sbatch RUN_DIR HASH [NEIGHBOR]`` with the site's
settings as sbatch options and the rest in the environment. The job name is the journal's token, so
a controller killed between ``sbatch`` and journaling the id finds the job again by name. One
``squeue`` call per poll follows every job of the run; jobs it no longer lists are looked up with
``sacct``, or with ``scontrol show job`` where accounting storage is disabled. Jobs are requeueable:
the batch script requeues itself when USR1 warns of the time limit, SLURM requeues it after
preemption or a node failure, and the training stages resume from their last checkpoints. A
requeued job keeps its id and counts as pending/running, not failed. Jobs keep running when the
controller stops; a re-run of the same command adopts them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flexibert.cluster.base import ENDED, FAILED, LOST, PENDING, RUNNING, TOKEN_VARIABLE, Executor, ExecutorError, JobRequest, JobStatus
from flexibert.utils.cli import setting

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCRIPT = REPO / "slurm" / "candidate_job.sbatch"
CLIENT_TOOLS = ("sbatch", "squeue", "scontrol")
COMMAND_TIMEOUT_S = 120  # SLURM clients retry an unreachable slurmctld for ~10-20 s before they give up

# Every job state of SLURM 22.05-24.x (squeue %T, sacct State, scontrol JobState) and what it means for the search.
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
                            "POWER_UP_NODE"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                            "UPDATE_DB"})
ENDED_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "CANCELLED", "BOOT_FAIL",
                           "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
UNKNOWN_ID = "Invalid job id specified"


class SlurmError(ExecutorError):
    """SLURM cannot be used as asked, or refused: SLURM's own message, and what to do.

    Jobs already submitted keep running; re-running the search adopts them.
    """


@dataclass(frozen=True)
class SlurmSettings:
    """The site-specific parts of a job: each field is a ``--slurm_<field>`` flag."""

    partition: str | None = setting(None, "partition (sbatch --partition; default: the cluster's default)")
    account: str | None = setting(None, "account to charge (sbatch --account)")
    qos: str | None = setting(None, "quality of service (sbatch --qos)")
    gpus_per_node: int = setting(2, "GPUs per job (--gres=gpu:N; 0 for none); with more than one, training runs under torchrun")
    cpus_per_task: int | None = setting(None, "CPU cores per job (sbatch --cpus-per-task)")
    mem: str | None = setting(None, "memory per job, e.g. 64G (sbatch --mem)")
    time: str = setting("24:00:00", "time limit per job run (sbatch --time); a job at its limit requeues itself and resumes")
    extra: tuple[str, ...] = setting((), 'more sbatch options (repeatable): --slurm_extra=--constraint=a100, or an #SBATCH line: '
                                         '--slurm_extra "#SBATCH --constraint=a100 --exclusive"',
                                     flag_default=None, action="append", metavar="OPTIONS")
    setup: str = setting("", "shell commands each job runs first, e.g. 'module load anaconda3; conda activate flexibert'",
                         flag_default=None)
    python: str = setting(sys.executable, "the Python that jobs run; 'python' runs the one --slurm_setup puts on PATH")
    signal_seconds: int = setting(300, "USR1 warns a job this long before its time limit (sbatch --signal; 0: no warning, "
                                       "the job times out and is retried)")
    max_requeues: int = setting(3, "how often a job requeues itself at its time limit before it is left to time out")
    script: Path = setting(DEFAULT_SCRIPT, "the batch script each job runs")


def settings_from_args(args: argparse.Namespace) -> SlurmSettings:
    """The ``--slurm_*`` flags as settings, checked (raises SlurmError naming the flag)."""
    return SlurmExecutor.read_settings(args)


def time_limit_seconds(text: str) -> int | None:
    """Seconds of a SLURM time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S); None for none, UNLIMITED or an unknown format."""
    found = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not found:
        return None
    days, first, second, third = (int(part) if part else None for part in found.groups())
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = first, second or 0, third or 0
    elif third is not None:  # H:M:S
        hours, minutes, seconds = first, second, third
    else:  # M or M:S
        hours, minutes, seconds = 0, first, second or 0
    return (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def extra_options(lines: tuple[str, ...] | list[str]) -> list[str]:
    """sbatch options from ``--slurm_extra`` values, which may be written as #SBATCH lines."""
    options: list[str] = []
    for line in lines:
        line = line.strip()
        options += shlex.split(line[len("#SBATCH"):] if line.startswith("#SBATCH") else line)
    return options


def sbatch_command(settings: SlurmSettings, request: JobRequest) -> list[str]:
    """The sbatch command line of one job; options given here override the script's #SBATCH lines."""
    log = str(request.log).replace("%", "%%")  # sbatch expands %j, %x, ... in file names
    command = ["sbatch", "--parsable", f"--job-name={request.token}", f"--output={log}", f"--error={log}", "--open-mode=append",
               f"--chdir={REPO}", "--export=ALL", "--nodes=1", "--ntasks=1", "--requeue"]
    for option, value in (("partition", settings.partition), ("account", settings.account), ("qos", settings.qos),
                          ("cpus-per-task", settings.cpus_per_task), ("mem", settings.mem), ("time", settings.time)):
        if value:
            command.append(f"--{option}={value}")
    if settings.gpus_per_node:
        command.append(f"--gres=gpu:{settings.gpus_per_node}")
    if settings.signal_seconds:
        command.append(f"--signal=B:USR1@{settings.signal_seconds}")
    command += extra_options(settings.extra)
    return [*command, str(settings.script), str(request.run_dir), request.model_hash, *([request.neighbor] if request.neighbor else [])]


def job_environment(settings: SlurmSettings, request: JobRequest) -> dict[str, str]:
    """What the batch script reads from its environment (sbatch --export=ALL passes it on)."""
    return {"FLEXIBERT_SETUP": settings.setup, "FLEXIBERT_PYTHON": settings.python, "FLEXIBERT_REPO": str(REPO),
            "FLEXIBERT_ATTEMPT": str(request.attempt), "FLEXIBERT_MAX_REQUEUES": str(settings.max_requeues),
            TOKEN_VARIABLE: request.token}


def job_status(state: str, reason: str = "") -> JobStatus:
    """The executor state of a SLURM job state (squeue %T, sacct State such as 'CANCELLED by 0', scontrol JobState)."""
    words = state.split()
    name = words[0].rstrip("+").upper() if words else "UNKNOWN"
    detail = state.strip() + (f" ({reason})" if reason and reason not in ("None", "(null)") else "")
    if name in PENDING_STATES:
        return JobStatus(PENDING, detail)
    if name in RUNNING_STATES:
        return JobStatus(RUNNING, detail)
    if name in ENDED_STATES:
        return JobStatus(ENDED, detail)
    if name in FAILED_STATES:
        return JobStatus(FAILED, detail)
    # A state newer than this table: keep waiting rather than start a second copy of a job that may be running.
    return JobStatus(RUNNING, f"{detail}: a SLURM state this version does not know; still waiting for the job")


def check_client_tools() -> None:
    """Fail early, with what to do, where the SLURM client commands are missing."""
    missing = [tool for tool in CLIENT_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SlurmError(f"--executor slurm needs the SLURM client commands, but {', '.join(missing)} "
                         "is not on PATH; run the search on a submit (login) host of your cluster, or install the "
                         "SLURM client tools (e.g. Debian/Ubuntu: apt-get install slurm-client)")


def scontrol_value(line: str, key: str) -> str:
    """One value of a ``scontrol show job -o`` line (values may hold spaces, so read up to the next ``Key=``)."""
    found = re.search(rf"(?:^|\s){key}=(.*?)(?=\s+[A-Za-z/:]+=|$)", line)
    return found.group(1) if found else ""


def _message(proc: subprocess.CompletedProcess) -> str:
    return (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").strip()


class SlurmExecutor(Executor):
    """Submits candidate jobs with sbatch and follows them with squeue (sacct or scontrol for jobs squeue has forgotten)."""

    name = "slurm"
    where = "on SLURM"
    Settings = SlurmSettings
    flags_prefix = "slurm_"
    flags_title = "SLURM (--executor slurm)"
    cancel_on_stop = False  # Ctrl-C stops the controller only; a resumed controller adopts the jobs

    def __init__(self, settings: SlurmSettings, poll_interval: float = 5.0):
        super().__init__(poll_interval)
        self.settings = settings

    @classmethod
    def check_usable(cls) -> None:
        check_client_tools()

    @classmethod
    def complete_settings(cls, settings: SlurmSettings, args: argparse.Namespace) -> SlurmSettings:
        """The script as an absolute path, as the sbatch command line (and the job's log) names it."""
        return dataclasses.replace(settings, script=settings.script.resolve())

    @classmethod
    def check_settings(cls, settings: SlurmSettings) -> None:
        """Refuse settings that cannot work, before any job is submitted."""
        for name in ("gpus_per_node", "signal_seconds", "max_requeues"):
            if getattr(settings, name) < 0:
                raise SlurmError(f"--slurm_{name} must be at least 0")
        if settings.cpus_per_task is not None and settings.cpus_per_task < 1:
            raise SlurmError("--slurm_cpus_per_task must be at least 1")
        limit = time_limit_seconds(settings.time)
        if limit is not None and settings.signal_seconds >= limit:
            raise SlurmError(f"--slurm_signal_seconds {settings.signal_seconds} is not shorter than --slurm_time "
                             f"{settings.time} ({limit}s): every run would be warned at once and requeue itself; "
                             "give fewer seconds (SLURM sends the signal up to ~60 s late)")
        if not settings.script.is_file():
            raise SlurmError(f"--slurm_script {settings.script}: no such file")

    # -- running SLURM's commands ------------------------------------------------------------------------------

    def _run(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise SlurmError(f"{command[0]} is not on PATH; install the SLURM client tools or run on a submit host") from None
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 1, "", f"{command[0]} did not answer within {COMMAND_TIMEOUT_S}s")

    # -- the Executor interface --------------------------------------------------------------------------------

    def _submit(self, request: JobRequest) -> str:
        command = sbatch_command(self.settings, request)
        with open(request.log, "a", encoding="utf-8") as log:  # the job appends its output below
            log.write(f"# submitted {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
        proc = self._run(command, env={**os.environ, **job_environment(self.settings, request)})
        job_id = proc.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"
        if proc.returncode != 0 or not job_id.isdigit():
            raise SlurmError(f"sbatch refused the job of model {request.model_hash[:12]} (exit {proc.returncode}); "
                             f"SLURM said:\n{_message(proc)}\ncommand: {shlex.join(command)}")
        self._last[job_id] = JobStatus(PENDING, "submitted")
        return job_id

    def find(self, token: str) -> str | None:
        """The id of the job named ``token``: squeue while slurmctld remembers it, then sacct (if accounting is on)."""
        proc = self._run(["squeue", "-h", "-a", "-t", "all", "--name", token, "-o", "%i"])
        if proc.returncode != 0:
            raise SlurmError(f"squeue cannot look up job {token}; SLURM said:\n{_message(proc)}")
        ids = proc.stdout.split()
        if not ids:
            ids = [line.split("|")[0] for line in self._sacct(["--name", token, "-o", "JobIDRaw"]) or []]
        return ids[-1] if ids else None

    def _poll(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """All states with one squeue call; jobs squeue no longer lists are looked up in sacct or scontrol."""
        proc = self._run(["squeue", "-h", "-a", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"])
        if proc.returncode != 0 and UNKNOWN_ID not in proc.stderr:  # every id unknown: exit 1 with that message
            return self._unreachable(job_ids, f"squeue failed: {_message(proc)}")
        statuses = {}
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            job_id, state, reason = (line.split("|") + ["", ""])[:3]
            if job_id in job_ids:
                statuses[job_id] = job_status(state, reason)
        missing = [job_id for job_id in job_ids if job_id not in statuses]
        if missing:
            statuses.update(self._forgotten(missing))
        return statuses

    def cancel(self, job_ids: list[str]) -> None:
        proc = self._run(["scancel", *job_ids])
        if proc.returncode != 0:
            raise SlurmError(f"scancel {' '.join(job_ids)} failed; SLURM said:\n{_message(proc)}")

    # -- jobs squeue no longer lists ---------------------------------------------------------------------------

    def _sacct(self, selection: list[str]) -> list[str] | None:
        """sacct's lines for ``selection``, or None where it cannot answer (no sacct, accounting storage disabled)."""
        if shutil.which("sacct") is None:
            return None
        proc = self._run(["sacct", "-n", "-P", "-X", *selection])
        return proc.stdout.splitlines() if proc.returncode == 0 else None

    def _forgotten(self, job_ids: list[str]) -> dict[str, JobStatus]:
        statuses = {}
        for line in self._sacct(["-j", ",".join(job_ids), "-o", "JobIDRaw,State"]) or []:
            job_id, _, state = line.partition("|")
            if job_id in job_ids:
                statuses[job_id] = job_status(state)
        for job_id in job_ids:
            if job_id not in statuses:
                statuses[job_id] = self._scontrol(job_id)
        return statuses

    def _scontrol(self, job_id: str) -> JobStatus:
        proc = self._run(["scontrol", "show", "job", "-o", job_id])
        if proc.returncode == 0 and "JobState=" in proc.stdout:
            return job_status(scontrol_value(proc.stdout, "JobState"), scontrol_value(proc.stdout, "Reason"))
        if UNKNOWN_ID in proc.stderr:
            return JobStatus(LOST, f"SLURM no longer knows job {job_id} (it ended and was purged, and sacct has no record)")
        return self._unreachable([job_id], f"scontrol failed: {_message(proc)}")[job_id]

    def _unreachable(self, job_ids: list[str], message: str) -> dict[str, JobStatus]:
        """SLURM did not answer: keep the last known states (a job is not lost because slurmctld is restarting)."""
        print(f"warning: {message}; asking again in {self.poll_interval:g}s", file=sys.stderr, flush=True)
        return {job_id: self._last.get(job_id, JobStatus(PENDING, "state unknown: SLURM did not answer")) for job_id in job_ids}
