"""One candidate's job, as a library: (weight transfer from a trained neighbour) -> MLM pretraining -> GLUE scoring.

The executors run it (in the controller's process, as ``python -m flexibert.candidate_job``, or in a
SLURM batch script, one stage at a time under torchrun). Every job of a run reads the same
``job_config.json``, and everything it writes lands in its model folder (search/layout.py), with
``results.json`` written last and atomically: its presence means the job succeeded. Re-running an
interrupted job resumes from the training stages' checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from embeddings.library import load_shared
from flexibert.cluster.base import JobRequest
from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.latency import latency_of
from flexibert.models.modeling_flexibert import FlexiBERTModel
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.benchmarks import BenchmarkError, benchmark_columns, benchmark_score
from flexibert.search.layout import SCORE_FIELD, ModelLayout, RunLayout
from flexibert.search.transfer import warm_start_steps
from flexibert.training.distributed import is_main_process
from flexibert.training.glue_score import RESULTS_FILE as GLUE_RESULTS_FILE
from flexibert.training.glue_score import parse_args as parse_glue_args
from flexibert.training.glue_score import score_model
from flexibert.training.pretrain import RESULTS_FILE as PRETRAIN_RESULTS_FILE
from flexibert.training.pretrain import parse_args as parse_pretrain_args
from flexibert.training.pretrain import pretrain
from flexibert.training.results import count_parameters
from flexibert.utils.files import write_json_atomic

STAGES = ("all", "pretrain", "finetune", "collect")


class JobError(RuntimeError):
    """The job cannot produce a result (bad settings, a model missing from the benchmark file, ...)."""


def read_job_config(run: RunLayout) -> dict:
    if not run.job_config.is_file():
        raise JobError(f"{run.job_config} is missing; start the search with flexibert/run_boshnas.py, which writes it")
    return json.loads(run.job_config.read_text())


def encoder_parameters(model_dict: dict) -> int:
    """Encoder parameters of a model dict, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return count_parameters(FlexiBERTModel(FlexiBERTConfig.from_model_dict(model_dict)))


def _neighbor_start(run: RunLayout, neighbor: str | None) -> Path | None:
    """The neighbour's pretrained model folder if it exists (it may not: e.g. a model scored from a benchmark)."""
    if neighbor is None:
        return None
    folder = run.model(neighbor).pretrained
    if (folder / "config.json").is_file():
        return folder
    print(f"note: neighbour {neighbor[:12]} has no pretrained model in {folder}; pretraining from scratch", flush=True)
    return None


def pretrain_steps(config: dict, model_hash: str, neighbor: str | None) -> int:
    """The full budget from scratch; after a warm start, --transfer_pretrain_steps or the closeness rule (search/transfer.py)."""
    if neighbor is None:
        return config["pretrain_steps"]
    if config["transfer_pretrain_steps"] is not None:
        return config["transfer_pretrain_steps"]
    library = load_shared(config["library"])
    closeness = model_overlap(library.model_dict(model_hash), library.model_dict(neighbor))
    return warm_start_steps(closeness, config["pretrain_steps"])


def run_pretrain(run: RunLayout, model_hash: str, neighbor: str | None, config: dict) -> dict:
    start_from = _neighbor_start(run, neighbor)
    steps = pretrain_steps(config, model_hash, neighbor if start_from else None)
    argv = ["--model_hash", model_hash, "--dataset_file", config["library"],
            "--output_dir", str(run.model(model_hash).pretrained), "--max_steps", str(steps), *config["pretrain_args"]]
    if start_from:
        argv += ["--init_from", str(start_from), "--transfer_mode", config["transfer_mode"]]
    return pretrain(parse_pretrain_args(argv))


def run_finetune(model: ModelLayout, config: dict) -> dict:
    return score_model(parse_glue_args(["--model_name_or_path", str(model.pretrained), "--output_dir", str(model.glue),
                                        "--tasks", *config["tasks"], *config["finetune_args"]]))


def _trained_results(model: ModelLayout, budget_steps: int) -> dict:
    """What results.json records of the two training stages."""
    pretrain = json.loads((model.pretrained / PRETRAIN_RESULTS_FILE).read_text())
    glue = json.loads((model.glue / GLUE_RESULTS_FILE).read_text())
    return {SCORE_FIELD: glue["glue_score"], "source": "training", "tasks": glue["tasks"], "scores": glue["scores"],
            "parameters": glue["encoder_parameters"],
            "pretrain": {k: pretrain.get(k) for k in ("eval_loss", "perplexity", "global_step", "init_from",
                                                      "transferred_fraction", "world_size", "wall_time_s")},
            "training": training_record(pretrain, budget_steps),
            "finetune_wall_time_s": glue["wall_time_s"]}


def training_record(pretrain: dict, budget_steps: int) -> dict:
    """How the model was pretrained, so the leaderboard and the surrogate can tell a warm start from a scratch run.

    ``start`` is ``scratch`` or ``warm``; a warm start names its neighbour's model folder and how close
    the two encoders are. ``steps`` against ``budget_steps`` (the run's --pretrain_steps, what a scratch
    run trains) shows how much of the budget it used, and ``mlm_loss`` is the final validation MLM loss
    (the same masked sequences for every model).
    """
    warm = pretrain.get("init_from") is not None
    return {"start": "warm" if warm else "scratch", "from": pretrain.get("init_from"), "closeness": pretrain.get("closeness"),
            "steps": pretrain.get("global_step"), "budget_steps": budget_steps, "mlm_loss": pretrain.get("eval_loss")}


def job_latency(model: ModelLayout, model_dict: dict, settings: dict) -> dict:
    """The latency objective, measured on this job's device: the trained model, or (benchmark scores) a fresh one."""
    trained = FlexiBERTModel.from_pretrained(model.pretrained) if (model.pretrained / "config.json").is_file() else None
    return latency_of(model_dict, settings, trained)


def collect(run: RunLayout, model_hash: str, neighbor: str | None, config: dict, started: float) -> dict:
    """Write results.json from the stages' result files (or the benchmark), last, atomically."""
    model_dict = load_shared(config["library"]).model_dict(model_hash)
    model = run.model(model_hash)
    results = {"model_hash": model_hash, "model_dict": model_dict, "neighbor": neighbor}
    if config.get("benchmark_file"):
        try:
            score = benchmark_score(config["benchmark_file"], config["benchmark_metric"], model_hash)
        except BenchmarkError as err:
            raise JobError(str(err)) from None
        results.update({SCORE_FIELD: score, "source": f"benchmark {config['benchmark_file']} ({config['benchmark_metric']})",
                        "parameters": encoder_parameters(model_dict),
                        "benchmark": benchmark_columns(config["benchmark_file"], model_hash)})
    else:
        results.update(_trained_results(model, config["pretrain_steps"]))
    if config.get("latency"):
        results["latency"] = job_latency(model, model_dict, config["latency"])
    results["wall_time_s"] = round(time.time() - started, 3)
    write_json_atomic(model.results, results)
    return results


def _mark_start(model: ModelLayout, attempt: int, stage: str) -> None:
    """One marker per start (how often a model was (re)started is visible, and tests count them); the first start's time."""
    model.starts.mkdir(parents=True, exist_ok=True)
    (model.starts / f"attempt{attempt}-{stage}-pid{os.getpid()}-{time.time_ns()}").touch()
    if not model.started.exists():
        write_json_atomic(model.started, {"time": time.time()})


def run_job(run_dir: str | Path, model_hash: str, neighbor: str | None = None, attempt: int = 1, stage: str = "all") -> dict | None:
    """Run (a stage of) a candidate's job; returns results.json's content after 'collect'/'all'."""
    run = RunLayout(run_dir)
    config = read_job_config(run)
    model = run.model(model_hash)
    # Under torchrun every process runs this: one start marker per start, from the first.
    if is_main_process() and (stage in ("all", "pretrain") or not model.started.exists()):
        _mark_start(model, attempt, stage)
    training = not config.get("benchmark_file")
    if training and stage in ("all", "pretrain"):
        run_pretrain(run, model_hash, neighbor, config)
    if training and stage in ("all", "finetune"):
        run_finetune(model, config)
    if stage in ("all", "collect"):
        # Only here: under torchrun the other ranks would race the first rank's write of started.json.
        return collect(run, model_hash, neighbor, config, json.loads(model.started.read_text())["time"])
    return None


def run_request(request: JobRequest) -> dict | None:
    """Run a whole candidate job in this process (what the inline executor does with a submission)."""
    return run_job(request.run_dir, request.model_hash, request.neighbor, request.attempt)
