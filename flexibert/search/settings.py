"""The search's settings: its command line, the checks run before anything is trained, and what the journal records.

A search's settings are checked in full when it starts (including the flags its jobs will get), and
recorded in the journal's first ``run`` event; a resumed search must agree with it on every setting
that decides what is proposed or how models are scored (fixed_settings()).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

from flexibert.cluster import add_executor_arguments
from flexibert.data.glue import GLUE_TASKS, GlueError, get_task
from flexibert.data.glue_metrics import DEFAULT_TASKS
from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.search.layout import RunLayout
from flexibert.search.objectives import CONSTRAINT_FLAGS, Latency, ObjectiveError, ObjectiveSet
from flexibert.search.strategies import STRATEGIES
from flexibert.search.transfer import DEFAULT_THRESHOLD
from flexibert.training.glue_score import GlueScoreSettings
from flexibert.training.glue_score import parse_args as glue_parse_args
from flexibert.training.pretrain import PretrainSettings
from flexibert.training.pretrain import parse_args as pretrain_parse_args
from flexibert.training.settings import ConfigurationError
from flexibert.utils.cli import HelpFormatter

# Settings a resumed run must share with the run it continues: they decide what is proposed and how models are scored.
FIXED_SETTINGS = ("dataset_file", "strategy", "seed", "num_init", "tasks", "benchmark_file", "benchmark_metric",
                  "objectives", "transfer_threshold", "no_transfer", "job")


class SearchError(RuntimeError):
    """A problem with the search's settings or inputs that the user can fix."""


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The search's flags (run_boshnas.py's command line), checked; a mistake exits with argparse's usage message."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    search = parser.add_argument_group("search")
    search.add_argument("--dataset_file", required=True, help="graph library JSON (embeddings/generate_library.py)")
    search.add_argument("--run_dir", help="folder for everything the run writes (default: runs/<strategy>_<task>_seed<seed>)")
    search.add_argument("--task", default="glue", choices=("glue", *GLUE_TASKS),
                        help="score models by the GLUE score over --glue_tasks, or by one task's dev score")
    search.add_argument("--glue_tasks", nargs="+", default=list(DEFAULT_TASKS), metavar="TASK", type=glue_task_name,
                        help=f"tasks averaged into the GLUE score when --task glue (of: {' '.join(GLUE_TASKS)})")
    search.add_argument("--strategy", choices=list(STRATEGIES), default="boshnas", help="how the next models are chosen")
    search.add_argument("--num_init", type=int, default=10, help="models of the initial design, evaluated before the strategy "
                        "takes over: at random (BOSHNAS on a score against one cost: one per cost stratum)")
    search.add_argument("--budget", type=int, default=50, help="models to evaluate in all (failed ones count)")
    search.add_argument("--max_concurrent", type=int, default=1, help="jobs in flight at once")
    search.add_argument("--seed", type=int, default=1, help="seed of every random choice of the search (recorded)")
    search.add_argument("--stop_on_convergence", action="store_true",
                        help="stop before --budget when the strategy has converged (BOSHNAS: --patience and --aleatoric_rounds "
                             "rounds without progress); by default a search evaluates --budget models")
    search.add_argument("--max_retries", type=int, default=2, help="re-runs of a failed or lost job before the model is recorded as failed")
    search.add_argument("--benchmark_file",
                        help='look scores up in {"entries": [{"model_dict": ..., "scores": {...}}]} instead of training')
    search.add_argument("--benchmark_metric", default="glue", help="which score of --benchmark_file (0-100)")

    goals = parser.add_argument_group("objectives and constraints (flexibert/search/objectives.py)")
    goals.add_argument("--objectives", nargs="+", default=["glue"], metavar="NAME",
                       help="what to optimise: glue (the score), params, encoder_params, flops, a GLUE task, or a numeric column "
                            "of --benchmark_file (e.g. time_to_train); NAME:max / NAME:min sets a column's direction. "
                            "Several objectives search for their Pareto front (strategies boshnas, tpe, nsga2, random)")
    goals.add_argument("--flops_seq_length", type=int, default=128, help="sequence length at which flops (per token) are counted")
    goals.add_argument("--latency_batch_size", type=int, default=1, help="batch size at which each job measures the latency objective")
    goals.add_argument("--latency_seq_length", type=int, default=128, help="sequence length of the latency measurement")
    goals.add_argument("--latency_repeats", type=int, default=20, help="timed forward passes per latency measurement (median reported)")
    goals.add_argument("--max_params", type=float, help="never propose a model with more parameters (embeddings and encoder)")
    goals.add_argument("--max_encoder_params", type=float, help="never propose a model with more encoder parameters")
    goals.add_argument("--max_flops", type=float, help="never propose a model with more FLOPs per token at --flops_seq_length")
    goals.add_argument("--max_latency_ms", type=float,
                       help="never propose a model slower than this: each model is measured on the machine the search runs on "
                            "(random weights, --latency_batch_size x --latency_seq_length, median of --latency_repeats passes) "
                            "just before it would be proposed, and the measurement is journaled")

    add_executor_arguments(parser)

    transfer = parser.add_argument_group("knowledge transfer")
    transfer.add_argument("--transfer_threshold", type=float, default=DEFAULT_THRESHOLD,
                          help="warm-start from the closest trained neighbour if its closeness (the shared fraction of the two "
                               "encoders, model_overlap) is at least this")
    transfer.add_argument("--transfer_pretrain_steps", type=int,
                          help="pretraining steps after every warm start (default: decided per model from its closeness to the "
                               "neighbour, so that it reaches the quality of a scratch run: see flexibert/search/transfer.py)")
    transfer.add_argument("--transfer_mode", choices=("RP", "OD"), default="RP",
                          help="weight transfer: random projection or ordered slicing")
    transfer.add_argument("--no_transfer", action="store_true", help="always pretrain from scratch")

    train = parser.add_argument_group("training (passed to each job; see pretrain_flexibert.py and glue_score.py --help)")
    train.add_argument("--pretrain_steps", type=int, default=100_000, help="pretraining steps from scratch (the paper's)")
    train.add_argument("--tokenizer", default="roberta_tokenizer", help="tokenizer folder used for pretraining and fine-tuning")
    train.add_argument("--pretrain_dataset_dir", default="tokenized_pretraining_dataset", help="prepare_pretrain_dataset.py's output")
    train.add_argument("--glue_dir", help="GLUE TSV folder (default: the hub)")
    train.add_argument("--pretrain_args", default="",
                       help='more pretrain_flexibert.py flags, e.g. "--learning_rate 1e-3 --max_seq_length 128"')
    train.add_argument("--finetune_args", default="", help='more glue_score.py flags, e.g. "--num_train_epochs 1 --max_train_samples 2000"')

    for strategy in STRATEGIES.values():
        strategy.add_arguments(parser)

    args = parser.parse_args(argv)
    if not 0 <= args.transfer_threshold <= 1:
        parser.error(f"--transfer_threshold {args.transfer_threshold:g} is not a closeness: give a value from 0 to 1")
    if args.transfer_pretrain_steps is not None and args.transfer_pretrain_steps > args.pretrain_steps:
        parser.error(f"--transfer_pretrain_steps {args.transfer_pretrain_steps:,} is more than --pretrain_steps "
                     f"{args.pretrain_steps:,}: a warm-started model should train fewer steps than one from scratch; lower it")
    for name in ("num_init", "budget", "max_concurrent", "pretrain_steps", "transfer_pretrain_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.max_retries < 0:
        parser.error("--max_retries must be at least 0")
    for strategy in STRATEGIES.values():  # every strategy's flags, so a mistake shows whichever strategy runs
        try:
            strategy.from_args(args, RunLayout(args.run_dir or "."))
        except ValueError as err:
            parser.error(str(err))
    _check_objectives(parser, args)
    for name in ("pretrain_args", "finetune_args"):
        try:
            setattr(args, name, shlex.split(getattr(args, name)))
        except ValueError as err:
            parser.error(f"--{name}: {err}")
    if args.run_dir is None:
        args.run_dir = f"runs/{args.strategy}_{args.task}_seed{args.seed}"
    if (problem := run_dir_problem(Path(args.run_dir))) is not None:
        parser.error(f"--run_dir {args.run_dir}: {problem}")
    return args


def run_dir_problem(run_dir: Path) -> str | None:
    """Why the run folder cannot be made or used (a file in its place or on its path), or None."""
    if run_dir.exists() and not run_dir.is_dir():
        return "is a file, not a folder; give the folder the run should write to (a new or an earlier run's)"
    blocker = next((parent for parent in run_dir.parents if parent.exists() and not parent.is_dir()), None)
    return f"{blocker} is a file, not a folder; choose another run folder" if blocker is not None else None


def glue_task_name(name: str) -> str:
    """A --glue_tasks name the jobs accept (data/glue.py's get_task: sst2, SST-2, ...), kept as given; an unknown one fails at
    argparse time with the valid names, not in every job after its pretraining."""
    try:
        get_task(name)
    except GlueError:
        raise argparse.ArgumentTypeError(f"unknown GLUE task {name!r}; choose from {', '.join(GLUE_TASKS)}") from None
    return name


def _check_objectives(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Objectives that parse, caps that are positive, and a strategy that can optimise that many objectives."""
    longest = FlexiBERTConfig().max_position_embeddings
    for flag in ("flops_seq_length", "latency_seq_length"):
        if not 1 <= getattr(args, flag) <= longest:
            parser.error(f"--{flag} must be between 1 and {longest} (the models' position table)")
    for flag in ("latency_batch_size", "latency_repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    for flag in CONSTRAINT_FLAGS:
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive")
    try:
        objectives = ObjectiveSet.from_args(args)
    except ObjectiveError as err:
        parser.error(f"--objectives: {err}")
    if objectives.multi and not STRATEGIES[args.strategy].multi_objective:
        able = ", ".join(name for name, cls in STRATEGIES.items() if cls.multi_objective)
        parser.error(f"--strategy {args.strategy} optimises one objective; for --objectives {' '.join(args.objectives)} use one of: {able}")


def job_settings(args: argparse.Namespace) -> tuple[PretrainSettings, GlueScoreSettings]:
    """The settings each job's pretraining and GLUE scoring will parse from its flags, parsed now (a typo fails here)."""
    parsed = []
    for name, parse, argv in (("--pretrain_args", pretrain_parse_args, ["--model_dict", "{}", *job_pretrain_args(args)]),
                              ("--finetune_args", glue_parse_args, ["--model_name_or_path", "x", "--output_dir", "x",
                                                                    *job_finetune_args(args)])):
        try:
            parsed.append(parse(argv))
        except SystemExit as err:
            raise SearchError(f"{name} holds flags that the job's script rejects (its message is above)") from err
    return parsed[0], parsed[1]


def check_training_args(args: argparse.Namespace) -> None:
    """The jobs' flags parse and their values pass the checks each job runs first (numbers only, nothing is loaded), so a
    wrong value fails here and not in every job. Mixed precision is checked against this machine's GPU only when the jobs
    run on it (not under SLURM, whose nodes may differ from the controller's)."""
    pretrain, finetune = job_settings(args)
    for name, settings in (("--pretrain_args", pretrain), ("--finetune_args", finetune)):
        if args.executor == "slurm":  # the nodes' GPUs, not this machine's: only "one of the two" is checked here
            if settings.bf16 and settings.fp16:
                raise SearchError(f"{name}: choose one of --bf16 and --fp16")
            settings = dataclasses.replace(settings, bf16=False, fp16=False)
        try:
            settings.check()
        except ConfigurationError as err:
            raise SearchError(f"{name}: {err}") from None
    if finetune.max_seq_length > pretrain.max_position_embeddings:
        raise SearchError(f"--finetune_args --max_seq_length {finetune.max_seq_length} exceeds the models' max_position_embeddings "
                          f"{pretrain.max_position_embeddings} (pretraining's --max_position_embeddings): every fine-tuning would "
                          "fail; lower it in --finetune_args")


def job_pretrain_args(args: argparse.Namespace) -> list[str]:
    return ["--tokenizer", args.tokenizer, "--dataset_dir", args.pretrain_dataset_dir, *args.pretrain_args]


def job_finetune_args(args: argparse.Namespace) -> list[str]:
    return [*(["--glue_dir", args.glue_dir] if args.glue_dir else []), "--tokenizer", args.tokenizer, *args.finetune_args]


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def search_config(args: argparse.Namespace) -> dict:
    """The run's settings as recorded in the journal; those of fixed_settings() must match on a resume."""
    tasks = list(args.glue_tasks) if args.task == "glue" else [args.task]
    return {
        "dataset_file": _absolute(args.dataset_file), "strategy": args.strategy, "seed": args.seed, "num_init": args.num_init,
        "tasks": tasks, "benchmark_file": _absolute(args.benchmark_file), "benchmark_metric": args.benchmark_metric,
        "objectives": objectives_record(args),
        "transfer_threshold": args.transfer_threshold, "no_transfer": args.no_transfer,
        **strategy_records(args),
        "job": None if args.benchmark_file else job_config(args),
        "budget": args.budget, "max_concurrent": args.max_concurrent, "executor": args.executor, "max_retries": args.max_retries,
    }


def objectives_record(args: argparse.Namespace) -> dict | None:
    """The objectives and caps as the journal records them; None for the score alone without caps (as before objectives existed)."""
    objectives = ObjectiveSet.from_args(args)
    if objectives.names == ["glue"] and not objectives.constraints:
        return None
    latency = latency_settings(args, capped=True)
    return {**objectives.record(), **({"latency": latency} if latency else {})}


def job_config(args: argparse.Namespace) -> dict:
    """What every job of the run reads (the run folder's job_config.json)."""
    latency = latency_settings(args)
    return {
        "library": _absolute(args.dataset_file), "tasks": list(args.glue_tasks) if args.task == "glue" else [args.task],
        "benchmark_file": _absolute(args.benchmark_file), "benchmark_metric": args.benchmark_metric,
        "pretrain_steps": args.pretrain_steps, "transfer_pretrain_steps": args.transfer_pretrain_steps,
        "transfer_mode": args.transfer_mode, "pretrain_args": job_pretrain_args(args), "finetune_args": job_finetune_args(args),
        # Only when measured: the job settings of runs journaled before latency existed must still match on a resume.
        **({"latency": latency} if latency else {}),
    }


def latency_settings(args: argparse.Namespace, capped: bool = False) -> dict | None:
    """How latency is measured: by each job when it is an objective, and with ``capped`` also when --max_latency_ms
    caps it (the controller measures it then); None when neither."""
    objectives = ObjectiveSet.from_args(args)
    measured = [*objectives.objectives, *(c.objective for c in objectives.screened if capped)]
    if not any(isinstance(objective, Latency) for objective in measured):
        return None
    return {"batch_size": args.latency_batch_size, "seq_length": args.latency_seq_length, "repeats": args.latency_repeats}


def fixed_settings() -> tuple[str, ...]:
    """FIXED_SETTINGS, and every strategy's settings (recorded under the strategy's name, see strategy_records)."""
    return (*FIXED_SETTINGS, *(name for name, cls in STRATEGIES.items() if cls.Settings))


def strategy_records(args: argparse.Namespace) -> dict:
    """``{name: recorded settings}`` for every strategy that has settings: the chosen one's, None for the others."""
    return {name: cls.from_args(args, RunLayout(args.run_dir)).recorded_settings() if name == args.strategy else None
            for name, cls in STRATEGIES.items() if cls.Settings}
