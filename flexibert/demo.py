"""The whole FlexiBERT pipeline on one machine, at tiny settings: the README's first command.

    bash env_step.sh demo                       # set up what is missing, then run this
    python -m flexibert.demo --output_dir runs/demo
    python -m flexibert.demo --text_files ../shared/data/wikitext-2/wiki.train.tokens --glue_dir ../shared/data/glue \\
        --glue_tasks sst2 rte

Steps, each skipped when its output is already there (so a re-run resumes rather than restarts):
 1. data: real text and GLUE when available (--text_files and --glue_dir, or the hub when it can be
    reached), else offline demo data made from the documentation every Python ships (pydoc_data;
    synthetic GLUE-layout tasks, NOT GLUE: see data/DATA.md);
 2. a byte-level BPE tokenizer trained on the corpus, and the corpus tokenised into packed sequences;
 3. the graph library of design_space/design_space_tiny.yaml (12 two-layer models);
 4. a BOSHNAS search with the local executor: each candidate is pretrained (warm-started from a
    trained neighbour when their weight overlap is high enough), fine-tuned and scored;
 5. the hierarchical step: a finer library (one layer per stack) around the best models;
 6. a summary: where everything is, which data were used, the leaderboard's top rows.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import socket
import time
from pathlib import Path

from embeddings.library import Library
from embeddings.library_builder import build_library
from embeddings.library_builder import parse_args as library_args
from flexibert.data.demo_corpus import prepare_demo_data
from flexibert.data.pretraining_corpus import parse_args as corpus_args
from flexibert.data.pretraining_corpus import prepare_and_save
from flexibert.data.tokenization import save_hub_tokenizer, train_bpe_tokenizer
from flexibert.search.controller import run_search
from flexibert.search.hierarchy import next_level_library
from flexibert.search.hierarchy import parse_args as hierarchy_args
from flexibert.search.layout import RunLayout
from flexibert.search.settings import parse_args as search_args
from flexibert.utils.cli import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "design_space" / "design_space_tiny.yaml"
HUB_CORPUS = "Salesforce/wikitext:wikitext-2-raw-v1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="runs/demo", help="one folder for everything the demo makes")
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=("auto", "local", "hub", "offline"), default="auto",
                      help="auto: --text_files/--glue_dir if given, else the hub if reachable, else offline demo data")
    data.add_argument("--text_files", nargs="+", help="real pretraining text (plain-text files)")
    data.add_argument("--glue_dir", help="real GLUE TSV folder (<TASK>/train.tsv, dev.tsv)")
    data.add_argument("--glue_tasks", nargs="+", help="tasks to score (default: cola rte offline, sst2 rte otherwise)")
    data.add_argument("--train_samples", type=int, default=1000, help="fine-tuning examples per task")
    data.add_argument("--eval_samples", type=int, default=500, help="dev examples per task")
    search = parser.add_argument_group("search")
    search.add_argument("--budget", type=int, default=5, help="models trained in all")
    search.add_argument("--num_init", type=int, default=2, help="random models before BOSHNAS proposes")
    search.add_argument("--strategy", default="boshnas", help="search strategy (see run_boshnas.py)")
    search.add_argument("--seed", type=int, default=1, help="seed of the search")
    train = parser.add_argument_group("training (tiny CPU settings)")
    train.add_argument("--max_seq_length", type=int, default=64, help="tokens per sequence (pretraining and fine-tuning)")
    train.add_argument("--vocab_size", type=int, default=4000, help="size of the trained tokenizer")
    train.add_argument("--pretrain_steps", type=int, default=150, help="MLM steps from scratch")
    train.add_argument("--transfer_pretrain_steps", type=int, default=50, help="MLM steps after a warm start from a neighbour")
    train.add_argument("--finetune_epochs", type=float, default=3, help="fine-tuning epochs per task")
    args = parser.parse_args(argv)
    if args.data == "local" and not (args.text_files and args.glue_dir):
        parser.error("--data local needs --text_files and --glue_dir")
    return args


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub answers at all (a quick TCP connect, not a download)."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def step(number: int, text: str) -> None:
    print(f"\n== {number}. {text}", flush=True)


def choose_data(args: argparse.Namespace, out: Path) -> dict:
    """Where the corpus and GLUE tasks come from, and a line saying so."""
    mode = args.data
    if mode == "auto":
        mode = "local" if args.text_files and args.glue_dir else "hub" if hub_reachable() else "offline"
    if mode == "local":
        return {"mode": mode, "text_files": [str(Path(f).resolve()) for f in args.text_files], "hub_corpus": None,
                "glue_dir": str(Path(args.glue_dir).resolve()), "tasks": args.glue_tasks or ["sst2", "rte"],
                "description": f"real data: text {', '.join(args.text_files)}; GLUE TSVs in {args.glue_dir}"}
    if mode == "hub":
        return {"mode": mode, "text_files": None, "hub_corpus": HUB_CORPUS, "glue_dir": None, "tasks": args.glue_tasks or ["sst2", "rte"],
                "description": f"real data from the Hugging Face hub: {HUB_CORPUS} and GLUE (nyu-mll/glue)"}
    summary = prepare_demo_data(out / "data", train_size=args.train_samples, dev_size=args.eval_samples, seed=1)
    return {"mode": "offline", "text_files": [str(summary["corpus"]["train"]["path"])], "hub_corpus": None,
            "glue_dir": str(summary["glue_dir"]), "tasks": args.glue_tasks or list(summary["task_names"]),
            "description": f"OFFLINE demo data made from Python's pydoc_data documentation (synthetic tasks "
                           f"{'/'.join(summary['task_names'])}, NOT GLUE; see {out / 'data' / 'DATA.md'})"}


def prepare_text(args: argparse.Namespace, out: Path, data: dict) -> tuple[Path, Path]:
    tokenizer, dataset = out / "tokenizer", out / "pretrain_dataset"
    if not (tokenizer / "tokenizer_config.json").is_file():
        if data["text_files"]:
            train_bpe_tokenizer(data["text_files"], tokenizer, vocab_size=args.vocab_size)
        else:
            save_hub_tokenizer("roberta-base", tokenizer)
    if not (dataset / "dataset_dict.json").is_file():
        source = ["--text_files", *data["text_files"]] if data["text_files"] else ["--hub_datasets", data["hub_corpus"]]
        prepare_and_save(corpus_args([*source, "--tokenizer", str(tokenizer), "--max_seq_length", str(args.max_seq_length),
                                      "--max_samples", "20000", "--output_dir", str(dataset)]))
    return tokenizer, dataset


def demo_library(out: Path) -> Path:
    library = out / "library.json"
    if not library.is_file():
        build_library(library_args(["--design_space_file", str(TINY_SPACE), "--layers_per_stack", "2", "--num_neighbors", "11",
                                    "--dataset_file", str(library)])).save(library)
    return library


def search_argv(args: argparse.Namespace, out: Path, library: Path, data: dict, tokenizer: Path, dataset: Path) -> list[str]:
    seq = args.max_seq_length
    pretrain = (f"--max_seq_length {seq} --per_device_train_batch_size 16 --gradient_accumulation_steps 1 --warmup_steps 15 "
                f"--learning_rate 1e-3 --save_steps 50 --logging_steps 50")
    finetune = (f"--max_seq_length {seq} --max_train_samples {args.train_samples} --max_eval_samples {args.eval_samples} "
                f"--num_train_epochs {args.finetune_epochs} --learning_rate 3e-4 --warmup_ratio 0.1 "
                f"--per_device_train_batch_size 32 --save_steps 200 --logging_steps 50")
    argv = ["--dataset_file", str(library), "--run_dir", str(out / "search"), "--executor", "local", "--poll_interval", "2",
            "--strategy", args.strategy, "--seed", str(args.seed), "--num_init", str(args.num_init), "--budget", str(args.budget),
            "--glue_tasks", *data["tasks"], "--tokenizer", str(tokenizer), "--pretrain_dataset_dir", str(dataset),
            "--pretrain_steps", str(args.pretrain_steps), "--transfer_pretrain_steps", str(args.transfer_pretrain_steps),
            "--pretrain_args", pretrain, "--finetune_args", finetune]
    if args.strategy == "boshnas":
        argv += ["--surrogate_epochs", "100"]
    return argv + (["--glue_dir", data["glue_dir"]] if data["glue_dir"] else [])


def next_level(out: Path, library: Path, run_dir: Path) -> Path:
    finer = out / "library_level2.json"
    if not finer.is_file():
        new, _ = next_level_library(hierarchy_args(["--old_dataset_file", str(library), "--run_dir", str(run_dir),
                                                    "--new_dataset_file", str(finer), "--old_layers_per_stack", "2",
                                                    "--new_layers_per_stack", "1", "--top_models", "3",
                                                    "--neighbors_per_model", "3", "--num_neighbors", "20"]))
        new.save(finer)
    return finer


def top_rows(run_dir: Path, count: int = 5) -> list[dict]:
    with open(RunLayout(run_dir).leaderboard_csv, newline="") as handle:
        return list(csv.DictReader(handle))[:count]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    step(1, "data")
    data = choose_data(args, out)
    print(f"using {data['description']}", flush=True)
    step(2, "tokenizer and pretraining data")
    tokenizer, dataset = prepare_text(args, out, data)
    step(3, f"graph library of {TINY_SPACE.name}")
    library = demo_library(out)
    step(4, f"{args.strategy} search with the local executor ({args.budget} models; re-running resumes)")
    argv_search = search_argv(args, out, library, data, tokenizer, dataset)
    print("python -m flexibert.run_boshnas " + shlex.join(argv_search), flush=True)
    state = run_search(search_args(argv_search))
    step(5, "hierarchical step: a finer library around the best models")
    finer = next_level(out, library, out / "search")
    step(6, "summary")
    rows = top_rows(out / "search")
    print(f"output folder: {out}\ndata: {data['description']}\nGLUE tasks scored: {', '.join(data['tasks'])}")
    run = RunLayout(out / "search")
    print(f"search: {len(state.finished)} models scored, {len(state.failed())} failed; leaderboard {run.leaderboard_md}; "
          f"plots in {run.report}")
    print(f"next-level library: {finer} ({len(Library.load(finer))} models)")
    print("\ntop of the leaderboard:\n  rank  score  parameters  found by      model")
    for row in rows:
        params = int(row["parameters"] or 0)
        print(f"  {row['rank']:>4}  {float(row['score']):5.1f}  {params:>10,}  {row['method']:<12} {row['model_dict']}")
    print(f"\ndone in {time.perf_counter() - started:.0f}s")
    return {"output_dir": out, "data": data, "state": state, "next_library": finer}


if __name__ == "__main__":
    main()
