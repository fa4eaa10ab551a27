"""One search candidate's job: (weight transfer from a trained neighbour) -> MLM pretraining -> GLUE fine-tuning -> results.json.

    python -m flexibert.candidate_job --run_dir runs/demo --model_hash HASH [--neighbor HASH] [--stage all]

The search controller (``run_boshnas.py``) starts this once per candidate through an executor (in
its own process, a subprocess, or a SLURM batch script); it can also be run by hand. Settings come
from ``<run_dir>/job_config.json``, which the controller writes at the start of a run, so that every
job of a run trains the same way. Everything lands in ``<run_dir>/models/<hash>/``:
``pretrained/`` (the MLM model), ``glue/`` (one folder per task) and ``results.json`` (written
atomically, last: its presence means the job succeeded). With a benchmark file the job looks the
score up instead of training. Re-running an interrupted job resumes from the stages' checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

import torch

from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library
from flexibert.cluster.base import JobRequest
from flexibert.models.modeling_flexibert import FlexiBERTConfig, FlexiBERTModel
from flexibert.training.common import count_parameters, is_main_process
from flexibert.training.glue_score import parse_args as parse_glue_args
from flexibert.training.glue_score import score_model
from flexibert.training.pretrain import RESULTS_FILE as PRETRAIN_RESULTS_FILE
from flexibert.training.pretrain import parse_args as parse_pretrain_args
from flexibert.training.pretrain import pretrain
from flexibert.utils.files import write_json_atomic

JOB_CONFIG_FILE = "job_config.json"
RESULTS_FILE = "results.json"
SCORE_KEY = "glue_score"
STAGES = ("all", "pretrain", "finetune", "collect")


class JobError(RuntimeError):
    """The job cannot produce a result (bad settings, a model missing from the benchmark file, ...)."""


def model_dir(run_dir: Path, model_hash: str) -> Path:
    return Path(run_dir) / "models" / model_hash


def read_job_config(run_dir: Path) -> dict:
    path = Path(run_dir) / JOB_CONFIG_FILE
    if not path.is_file():
        raise JobError(f"{path} is missing; start the search with flexibert/run_boshnas.py, which writes it")
    return json.loads(path.read_text())


@lru_cache(maxsize=4)
def _benchmark_index(path: str, mtime: float) -> dict[str, dict]:
    """``{hash: scores}`` of a benchmark file, hashed once per process (and again if the file changes)."""
    data = json.loads(Path(path).read_text())
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise JobError(f"{path}: expected {{\"entries\": [{{\"model_dict\": ..., \"scores\": {{...}}}}, ...]}}")
    # An entry's "model_hash", when present, saves hashing every model dict (seconds for 10,000 models).
    return {entry.get("model_hash") or compute_model_hash(entry["model_dict"]): entry["scores"] for entry in entries}


@lru_cache(maxsize=2)
def _library(path: str, mtime: float | None) -> Library:
    return Library.load(path)


def load_library(path: str | Path) -> Library:
    """The run's library, read once per process (inline jobs share it with the controller)."""
    path = Path(path)
    return _library(str(path.resolve()), path.stat().st_mtime if path.is_file() else None)  # a missing file: Library.load says so


def benchmark_score(path: str | Path, metric: str, model_hash: str) -> float:
    """The score of ``model_hash`` in a benchmark file (scores 0-100)."""
    path = Path(path)
    scores = _benchmark_index(str(path.resolve()), path.stat().st_mtime).get(model_hash)
    if scores is None:
        raise JobError(f"model {model_hash} is not in the benchmark file {path}; a benchmark must score every model "
                       "the search can propose (build the library from the benchmark's models with --model_dicts)")
    if metric not in scores or not isinstance(scores[metric], (int, float)):
        raise JobError(f"model {model_hash} in {path} has no numeric score {metric!r} (it has: {', '.join(scores) or 'none'})")
    return float(scores[metric])


def encoder_parameters(model_dict: dict) -> int:
    """Encoder parameters of a model dict, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return count_parameters(FlexiBERTModel(FlexiBERTConfig.from_model_dict(model_dict)))


def _neighbor_start(run_dir: Path, neighbor: str | None) -> Path | None:
    """The neighbour's pretrained model folder if it exists (it may not: e.g. a model scored from a benchmark)."""
    if neighbor is None:
        return None
    folder = model_dir(run_dir, neighbor) / "pretrained"
    if (folder / "config.json").is_file():
        return folder
    print(f"note: neighbour {neighbor[:12]} has no pretrained model in {folder}; pretraining from scratch", flush=True)
    return None


def run_pretrain(run_dir: Path, model_hash: str, neighbor: str | None, config: dict) -> dict:
    start_from = _neighbor_start(run_dir, neighbor)
    steps = config["transfer_pretrain_steps"] if start_from else config["pretrain_steps"]
    argv = ["--model_hash", model_hash, "--dataset_file", config["library"],
            "--output_dir", str(model_dir(run_dir, model_hash) / "pretrained"), "--max_steps", str(steps), *config["pretrain_args"]]
    if start_from:
        argv += ["--init_from", str(start_from), "--transfer_mode", config["transfer_mode"]]
    return pretrain(parse_pretrain_args(argv))


def run_finetune(run_dir: Path, model_hash: str, config: dict) -> dict:
    folder = model_dir(run_dir, model_hash)
    return score_model(parse_glue_args(["--model_name_or_path", str(folder / "pretrained"), "--output_dir", str(folder / "glue"),
                                        "--tasks", *config["tasks"], *config["finetune_args"]]))


def collect(run_dir: Path, model_hash: str, neighbor: str | None, config: dict, started: float) -> dict:
    """Write results.json from the stages' result files (or the benchmark), last, atomically."""
    model_dict = load_library(config["library"]).model_dict(model_hash)
    folder = model_dir(run_dir, model_hash)
    results = {"model_hash": model_hash, "model_dict": model_dict, "neighbor": neighbor}
    if config.get("benchmark_file"):
        score = benchmark_score(config["benchmark_file"], config["benchmark_metric"], model_hash)
        results.update({SCORE_KEY: score, "source": f"benchmark {config['benchmark_file']} ({config['benchmark_metric']})",
                        "parameters": encoder_parameters(model_dict)})
    else:
        pretrain = json.loads((folder / "pretrained" / PRETRAIN_RESULTS_FILE).read_text())
        glue = json.loads((folder / "glue" / RESULTS_FILE).read_text())
        results.update({SCORE_KEY: glue["glue_score"], "source": "training", "tasks": glue["tasks"], "scores": glue["scores"],
                        "parameters": glue["encoder_parameters"],
                        "pretrain": {k: pretrain.get(k) for k in ("eval_loss", "perplexity", "global_step", "init_from",
                                                                  "transferred_fraction", "world_size", "wall_time_s")},
                        "finetune_wall_time_s": glue["wall_time_s"]})
    results["wall_time_s"] = round(time.time() - started, 3)
    write_json_atomic(folder / RESULTS_FILE, results)
    return results


def run_job(run_dir: str | Path, model_hash: str, neighbor: str | None = None, attempt: int = 1, stage: str = "all") -> dict | None:
    """Run (a stage of) a candidate's job; returns results.json's content after 'collect'/'all'."""
    run_dir = Path(run_dir)
    config = read_job_config(run_dir)
    folder = model_dir(run_dir, model_hash)
    started_file = folder / "started.json"
    # Under torchrun every process runs this: one start marker per start, from the first.
    if is_main_process() and (stage in ("all", "pretrain") or not started_file.exists()):
        # One marker per start: how often a model was (re)started is visible, and tests count them.
        starts = folder / "starts"
        starts.mkdir(parents=True, exist_ok=True)
        (starts / f"attempt{attempt}-{stage}-pid{os.getpid()}-{time.time_ns()}").touch()
        if not started_file.exists():
            write_json_atomic(started_file, {"time": time.time()})
    training = not config.get("benchmark_file")
    if training and stage in ("all", "pretrain"):
        run_pretrain(run_dir, model_hash, neighbor, config)
    if training and stage in ("all", "finetune"):
        run_finetune(run_dir, model_hash, config)
    if stage in ("all", "collect"):
        # Only here: under torchrun the other ranks would race the first rank's write of started.json.
        return collect(run_dir, model_hash, neighbor, config, json.loads(started_file.read_text())["time"])
    return None


def run_request(request: JobRequest) -> dict | None:
    """Run a whole candidate job in this process (what the inline executor does with a submission)."""
    return run_job(request.run_dir, request.model_hash, request.neighbor, request.attempt)
