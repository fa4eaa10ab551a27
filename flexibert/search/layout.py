"""Every path of a search's run folder, in one place.

The controller, the candidate jobs (in other processes, or on other machines under SLURM), the
reports, the strategies' checkpoints and the hierarchical step all read and write the same folder;
they agree on its layout because each of them asks these two objects instead of joining names.

    <run_dir>/
      journal.jsonl  .lock  job_config.json          the search's memory, its lock, what every job reads
      history.csv  leaderboard.csv  leaderboard.md   tables, rebuilt from the journal
      report/*.png  library_scored.json              plots; the library with this run's scores
      controller.log                                 console output of a search run by compare_strategies.py
      surrogate/round-NNNN[-objectiveK].pt           BOSHNAS's surrogate(s) after each round's fit
      models/<hash>/                                 one candidate (ModelLayout)

The names are part of the run-folder format: run folders written by earlier versions must resume,
so a name here changes only with a migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The score field of a candidate's results.json: the GLUE score, or one task's score for a single-task search.
# It keeps the name it had when only GLUE searches existed, so older run folders stay readable.
SCORE_FIELD = "glue_score"


@dataclass(frozen=True)
class ModelLayout:
    """The folder of one candidate: what its job writes, and the markers the controller and tests read."""

    root: Path

    @property
    def results(self) -> Path:
        """Written last and atomically by the job: its presence means the candidate has a score."""
        return self.root / "results.json"

    @property
    def pretrained(self) -> Path:
        """The MLM-pretrained model (and its checkpoints while it trains); neighbours warm-start from it."""
        return self.root / "pretrained"

    @property
    def glue(self) -> Path:
        """GLUE fine-tuning: one sub-folder per task and the combined ``results.json``."""
        return self.root / "glue"

    @property
    def started(self) -> Path:
        """When the job first started (its wall time counts from here, across restarts)."""
        return self.root / "started.json"

    @property
    def starts(self) -> Path:
        """One empty marker file per start of the job: how often a model was (re)started."""
        return self.root / "starts"

    def log(self, attempt: int) -> Path:
        return self.root / f"job-{attempt}.log"


@dataclass(frozen=True)
class RunLayout:
    """The run folder of one search (``--run_dir``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def job_config(self) -> Path:
        """Written by the controller at every start; every job of the run reads its settings from it."""
        return self.root / "job_config.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, model_hash: str) -> ModelLayout:
        return ModelLayout(self.models / model_hash)

    def surrogate_checkpoint(self, round_index: int, objective: int = 0) -> Path:
        """BOSHNAS's surrogate of one objective after a round's fit (the first objective's keeps the single-objective name)."""
        suffix = f"-objective{objective}" if objective else ""
        return self.root / "surrogate" / f"round-{round_index:04d}{suffix}.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def leaderboard_md(self) -> Path:
        return self.root / "leaderboard.md"

    @property
    def report(self) -> Path:
        """The plots."""
        return self.root / "report"

    @property
    def console_log(self) -> Path:
        """The controller's console output when compare_strategies.py runs the search quietly."""
        return self.root / "controller.log"

    @property
    def scored_library(self) -> Path:
        """A copy of the library with this run's scores as its 'performances' (the input library is never written)."""
        return self.root / "library_scored.json"
