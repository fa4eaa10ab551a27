"""The whole FlexiBERT pipeline on one machine, at tiny settings: the README's first command.

    bash env_step.sh demo                       # set up what is missing, then run this
    python -m flexibert.demo --output_dir runs/demo
    python -m flexibert.demo --text_files ../shared/data/wikitext-2/wiki.train.tokens --glue_dir ../shared/data/glue \\
        --glue_tasks sst2 rte

Steps, each kept when its output was built from the same inputs (so a re-run resumes rather than restarts):
 1. data: real text and GLUE when available (--text_files and --glue_dir, or the hub when it can be
    reached), else offline demo data made from the documentation every Python ships (pydoc_data;
    synthetic GLUE-layout tasks, NOT GLUE: see data/DATA.md);
 2. a byte-level BPE tokenizer trained on the corpus, and the corpus tokenised into packed sequences;
 3. the graph library of design_space/design_space_tiny.yaml (12 two-layer models);
 4. a BOSHNAS search with the local executor: each candidate is pretrained (warm-started from a
    trained neighbour when their weight overlap is high enough), fine-tuned and scored; the console
    shows each running model's stage, step and ETA;
 5. the hierarchical step: a finer library (one layer per stack) around the best models;
 6. a summary: where everything is, which data were used, the leaderboard's top rows.

Every kept output has a record beside it, ``<output>.stage.json`` (:class:`Stage`): what it was built
from (the data source, the input files' digests, the flags that shape it, and the digests of the
outputs of the steps before it). When any of that differs on a re-run, the step is rebuilt, the
console says what changed, and the steps after it follow. The search resumes from its journal; the
next-level library is built only from a search that ended (budget spent, converged or library
exhausted): after an interrupted search, a re-run first resumes the search.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from embeddings.library import Library
from embeddings.library_builder import build_library
from embeddings.library_builder import parse_args as library_args
from flexibert.data.demo_corpus import GENERATOR_VERSION, prepare_demo_data
from flexibert.data.hub import offline_mode, unreachable_reason
from flexibert.data.pretraining_corpus import parse_args as corpus_args
from flexibert.data.pretraining_corpus import prepare_and_save
from flexibert.data.tokenization import save_hub_tokenizer, train_bpe_tokenizer
from flexibert.search.controller import run_search
from flexibert.search.hierarchy import next_level_library
from flexibert.search.hierarchy import parse_args as hierarchy_args
from flexibert.search.journal import SearchState
from flexibert.search.layout import RunLayout
from flexibert.search.settings import parse_args as search_args
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "design_space" / "design_space_tiny.yaml"
HUB_CORPUS = "Salesforce/wikitext:wikitext-2-raw-v1"
HUB_GLUE = "nyu-mll/glue"
HUB_TOKENIZER = "roberta-base"
MAX_CORPUS_SAMPLES = 20000
LEVEL2_FLAGS = ("--old_layers_per_stack", "2", "--new_layers_per_stack", "1", "--top_models", "3", "--neighbors_per_model", "3",
                "--num_neighbors", "20")
# The demo's flags that shape what the search trains and scores; a change starts a new search (--budget only extends one).
SEARCH_FLAGS = ("strategy", "seed", "num_init", "max_seq_length", "train_samples", "eval_samples", "pretrain_steps",
                "transfer_pretrain_steps", "finetune_epochs")
SMALL_FILE = 1 << 20  # files up to this size are fingerprinted by content; larger ones (a corpus) by size and modification time
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C, as shells report it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="runs/demo", help="one folder for everything the demo makes")
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=("auto", "local", "hub", "offline"), default="auto",
                      help="auto: --text_files/--glue_dir if given, else the data of an earlier run in --output_dir, else the hub "
                           "if reachable, else offline demo data")
    data.add_argument("--text_files", nargs="+", help="real pretraining text (plain-text files)")
    data.add_argument("--glue_dir", help="real GLUE TSV folder (<TASK>/train.tsv, dev.tsv)")
    data.add_argument("--glue_tasks", nargs="+", help="tasks to score (default: cola rte offline, sst2 rte otherwise)")
    data.add_argument("--train_samples", type=int, default=1000, help="fine-tuning examples per task")
    data.add_argument("--eval_samples", type=int, default=500, help="dev examples per task")
    search = parser.add_argument_group("search")
    search.add_argument("--budget", type=int, default=5, help="models trained in all (a larger one extends an earlier search)")
    search.add_argument("--num_init", type=int, default=2, help="random models before BOSHNAS proposes")
    search.add_argument("--strategy", default="boshnas", help="search strategy (see run_boshnas.py)")
    search.add_argument("--seed", type=int, default=1, help="seed of the search")
    search.add_argument("--job_threads", type=int,
                        help="CPU threads of each training job (default: every core, as the demo trains one model at a time); "
                             "fewer leave cores to other work on a shared machine, and the demo takes longer")
    train = parser.add_argument_group("training (tiny CPU settings)")
    train.add_argument("--max_seq_length", type=int, default=64, help="tokens per sequence (pretraining and fine-tuning)")
    train.add_argument("--vocab_size", type=int, default=4000, help="size of the trained tokenizer")
    train.add_argument("--pretrain_steps", type=int, default=150, help="MLM steps from scratch")
    train.add_argument("--transfer_pretrain_steps", type=int, default=50, help="MLM steps after a warm start from a neighbour")
    train.add_argument("--finetune_epochs", type=float, default=3, help="fine-tuning epochs per task")
    args = parser.parse_args(argv)
    if args.data == "local" and not (args.text_files and args.glue_dir):
        parser.error("--data local needs --text_files and --glue_dir")
    if args.data == "auto" and bool(args.text_files) != bool(args.glue_dir):
        parser.error("real data needs both --text_files and --glue_dir; give both, or neither for the hub or offline demo data")
    if args.job_threads is not None and args.job_threads < 1:
        parser.error("--job_threads must be at least 1")
    # Checked before any step: a changed input rebuilds the steps that depend on it, so a mistyped path must not get that far.
    for path in args.text_files or []:
        if not Path(path).is_file():
            parser.error(f"--text_files: {path} is not a file")
    if args.glue_dir and not Path(args.glue_dir).is_dir():
        parser.error(f"--glue_dir: {args.glue_dir} is not a folder (it holds <TASK>/train.tsv and dev.tsv)")
    return args


def hub_reachable() -> bool:
    """Whether the hub answers at all (flexibert/data/hub.py's one quick probe, which offline mode skips)."""
    return not offline_mode(datasets=True) and unreachable_reason() is None


def step(number: int, text: str) -> None:
    print(f"\n== {number}. {text}", flush=True)


# -- what a cached output was built from -----------------------------------------------------------------------


def file_fingerprint(path: Path) -> str:
    """A small file's content digest; a large file's size and modification time (hashing a big corpus at every start is slow)."""
    stat = path.stat()
    if stat.st_size > SMALL_FILE:
        return f"{stat.st_size} bytes, modified {stat.st_mtime_ns}"
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(path: Path) -> dict[str, str]:
    """The fingerprint of a file, or of each file of a folder by its relative name (hidden staging files included)."""
    if path.is_file():
        return {path.name: file_fingerprint(path)}
    return {f.relative_to(path).as_posix(): file_fingerprint(f) for f in sorted(path.rglob("*")) if f.is_file()}


def digest(value: object) -> str:
    """One digest of a JSON value (key order does not matter)."""
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def source(paths: list[str]) -> dict:
    """Input files or folders as a record holds them: their paths, and one digest of their files' fingerprints."""
    return {"paths": paths, "content": digest({path: files_of(Path(path)) for path in paths})}


def shown(value: object, width: int = 70) -> str:
    """A recorded value short enough for a console line (digests are cut to 12 hex digits)."""
    if isinstance(value, str) and value.startswith("sha256:") and len(value) > 19:
        value = value[:19] + "..."
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def differences(old: object, new: object, name: str = "") -> list[str]:
    """``name: was X, now Y`` for each input that differs, down to the keys of nested records; an upstream stage's changed
    digest reads ``tokenizer changed`` (it was rebuilt)."""
    if isinstance(old, dict) and isinstance(new, dict) and set(old) == set(new):
        return [line for key in sorted(old) if old[key] != new[key]
                for line in differences(old[key], new[key], f"{name}.{key}" if name else key)]
    if name.startswith("upstream."):
        return [f"{name.removeprefix('upstream.')} changed"]
    return [f"{name or 'inputs'}: was {shown(old)}, now {shown(new)}"]


NOT_BUILT = "not built yet"


@dataclass
class Stage:
    """One cached step of the demo: its output, what it is built from, and the record beside the output that says so.

    As submitit's JobPaths owns the paths of a job, a Stage owns its output's record, ``<output>.stage.json``:
    :meth:`ensure` keeps the output when the record says it was built from these ``inputs`` and its files are unchanged
    since; otherwise it says why, removes the output, rebuilds it and writes the record last (atomically), so an
    interrupted build is rebuilt next time. Later stages put this one's :attr:`digest` among their inputs, so a rebuild
    here rebuilds them too. ``fingerprinted=False`` is for an output that changes as it is used (the search's run
    folder): only its inputs are compared.
    """

    name: str
    output: Path
    inputs: dict
    fingerprinted: bool = True

    @property
    def record_path(self) -> Path:
        return self.output.with_name(self.output.name + ".stage.json")

    def record(self) -> dict | None:
        """The record of the last build, None when there is none (never built, interrupted, or not a record)."""
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("inputs"), dict) else None

    def changes(self) -> list[str]:
        """Why the output cannot be kept; empty when it can."""
        record = self.record()
        if record is None:
            return [NOT_BUILT] if not self.output.exists() else ["no record of what it was built from (an interrupted build, or "
                                                                 "an earlier version of the demo)"]
        if not self.output.exists():  # a run folder that was never made (the search refused to start) is simply made now
            return [f"{self.output.name} is missing"] if self.fingerprinted else [NOT_BUILT]
        changed = self.changed_files(record) if self.fingerprinted else []
        if changed:
            return [f"its files changed since it was built ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"]
        return differences(record["inputs"], self.inputs)

    def changed_files(self, record: dict) -> list[str]:
        """The output's files that are missing or differ from what the build wrote (files added later, e.g. caches, do not count)."""
        recorded = record.get("output_files")
        if not isinstance(recorded, dict) or not recorded:
            return ["its record lists none"]
        now = files_of(self.output)
        return [name for name, fingerprint in recorded.items() if now.get(name) != fingerprint]

    def ensure(self, build: Callable[[], object] | None = None) -> Stage:
        """Keep the output if it is up to date, else (re)build it with ``build`` (None: a stage that fills its output later)."""
        reasons = self.changes()
        if not reasons:
            print(f"{self.name}: kept {self.output} (built from the same inputs)", flush=True)
            return self
        if reasons != [NOT_BUILT]:
            print(f"{self.name}: rebuilding {self.output}: {'; '.join(reasons)}", flush=True)
        self.clear()
        if build is not None:
            build()
        files = files_of(self.output) if self.fingerprinted else None
        write_json_atomic(self.record_path, {"stage": self.name, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "inputs": self.inputs,
                                             "output_files": files, "digest": digest(files if self.fingerprinted else self.inputs)})
        return self

    def clear(self) -> None:
        """Remove the record first (a kill during the removal then leaves an output without a record: rebuilt), then the output."""
        self.record_path.unlink(missing_ok=True)
        if self.output.is_dir() and not self.output.is_symlink():
            shutil.rmtree(self.output)
        elif self.output.exists() or self.output.is_symlink():
            self.output.unlink()

    @property
    def digest(self) -> str:
        """What a later stage records of this one: its output's digest (its inputs' for a stage whose output is not fingerprinted)."""
        record = self.record()
        return record["digest"] if record and "digest" in record else digest(self.inputs)


# -- the steps -------------------------------------------------------------------------------------------------------


def auto_mode(args: argparse.Namespace, earlier: dict) -> str:
    """--data auto: the given files; else the data of the earlier run in this folder (``earlier``: its tokenizer's recorded
    inputs), so that re-running the same command resumes it rather than rebuilding everything on other data because the
    network came or went or the files were not repeated; else the hub if reachable, else offline demo data."""
    if args.text_files:
        return "local"
    mode = earlier.get("data")
    if mode == "local":
        files = " ".join((earlier.get("text") or {}).get("paths") or ["..."])
        raise SystemExit(f"demo: {args.output_dir} holds a run on your own data (--text_files {files}); pass the same --text_files "
                         "and --glue_dir to resume it, --data hub or --data offline to replace it, or another --output_dir")
    if mode == "hub" and not hub_reachable():
        raise SystemExit(f"demo: {args.output_dir} holds a run on hub data, but the hub cannot be reached; re-run when it can, "
                         "pass --data offline to replace it with offline demo data, or choose another --output_dir")
    if mode in ("hub", "offline"):
        print(f"--data auto: {mode} data, as the earlier run in {args.output_dir} (pass --data to choose)", flush=True)
        return mode
    return "hub" if hub_reachable() else "offline"


def choose_data(args: argparse.Namespace, out: Path) -> dict:
    """Where the corpus and GLUE tasks come from, their fingerprints (what the later stages record), and a line saying so."""
    earlier = (Stage("tokenizer", out / "tokenizer", {}).record() or {}).get("inputs", {})
    mode = auto_mode(args, earlier) if args.data == "auto" else args.data
    if mode == "local":
        data = {"text_files": [str(Path(f).resolve()) for f in args.text_files], "hub_corpus": None,
                "glue_dir": str(Path(args.glue_dir).resolve()), "tasks": args.glue_tasks or ["sst2", "rte"],
                "description": f"real data: text {', '.join(args.text_files)}; GLUE TSVs in {args.glue_dir}"}
    elif mode == "hub":
        data = {"text_files": None, "hub_corpus": HUB_CORPUS, "glue_dir": None, "tasks": args.glue_tasks or ["sst2", "rte"],
                "description": f"real data from the Hugging Face hub: {HUB_CORPUS} and GLUE ({HUB_GLUE})"}
    else:
        data = offline_data(args, out)
    text = source(data["text_files"]) if data["text_files"] else {"hub": data["hub_corpus"]}
    glue = source([data["glue_dir"]]) if data["glue_dir"] else {"hub": HUB_GLUE}
    return {"mode": mode, **data, "text_source": text, "glue_source": glue}


def offline_data(args: argparse.Namespace, out: Path) -> dict:
    """The offline demo data (their own stage: other sizes rebuild them, and everything trained on them)."""
    folder = out / "data"
    sizes = {"train_size": args.train_samples, "dev_size": args.eval_samples, "seed": 1}
    Stage("demo data", folder, {**sizes, "generator_version": GENERATOR_VERSION}).ensure(
        partial(prepare_demo_data, folder, **sizes, overwrite=True))
    summary = prepare_demo_data(folder, **sizes)  # the summary of the build just checked (kept as it is: its manifest matches)
    return {"text_files": [str(summary["corpus"]["train"]["path"])], "hub_corpus": None, "glue_dir": str(summary["glue_dir"]),
            "tasks": args.glue_tasks or list(summary["task_names"]),
            "description": f"OFFLINE demo data made from Python's pydoc_data documentation (synthetic tasks "
                           f"{'/'.join(summary['task_names'])}, NOT GLUE; see {folder / 'DATA.md'})"}


def tokenizer_stage(args: argparse.Namespace, out: Path, data: dict) -> Stage:
    """A BPE tokenizer trained on the corpus (the hub's roberta-base with hub data)."""
    folder = out / "tokenizer"
    if data["text_files"]:
        inputs = {"data": data["mode"], "text": data["text_source"], "vocab_size": args.vocab_size}
        return Stage("tokenizer", folder, inputs).ensure(partial(train_bpe_tokenizer, data["text_files"], folder,
                                                                 vocab_size=args.vocab_size))
    return Stage("tokenizer", folder, {"data": data["mode"], "hub_tokenizer": HUB_TOKENIZER}).ensure(
        partial(save_hub_tokenizer, HUB_TOKENIZER, folder))


def dataset_stage(args: argparse.Namespace, out: Path, data: dict, tokenizer: Stage) -> Stage:
    """The corpus tokenised with that tokenizer and packed into sequences."""
    folder = out / "pretrain_dataset"
    text = ["--text_files", *data["text_files"]] if data["text_files"] else ["--hub_datasets", data["hub_corpus"]]
    argv = [*text, "--tokenizer", str(tokenizer.output), "--max_seq_length", str(args.max_seq_length),
            "--max_samples", str(MAX_CORPUS_SAMPLES), "--output_dir", str(folder)]
    inputs = {"upstream": {"tokenizer": tokenizer.digest}, "text": data["text_source"], "max_seq_length": args.max_seq_length,
              "max_samples": MAX_CORPUS_SAMPLES}
    return Stage("pretraining data", folder, inputs).ensure(lambda: prepare_and_save(corpus_args(argv)))


def library_stage(out: Path) -> Stage:
    """The graph library of the tiny design space."""
    library = out / "library.json"
    argv = ["--design_space_file", str(TINY_SPACE), "--layers_per_stack", "2", "--num_neighbors", "11", "--dataset_file", str(library)]
    inputs = {"design_space": source([str(TINY_SPACE)]), "flags": argv[2:-2]}
    return Stage("graph library", library, inputs).ensure(lambda: build_library(library_args(argv)).save(library))


def search_stage(args: argparse.Namespace, out: Path, data: dict, library: Stage, tokenizer: Stage, dataset: Stage) -> Stage:
    """The search's run folder, started afresh when what it trains on or how it searches changed (it resumes otherwise)."""
    inputs = {"upstream": {"graph library": library.digest, "tokenizer": tokenizer.digest, "pretraining data": dataset.digest},
              "glue": data["glue_source"], "tasks": data["tasks"], **{name: getattr(args, name) for name in SEARCH_FLAGS}}
    return Stage("search", out / "search", inputs, fingerprinted=False).ensure()


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
    if args.job_threads:
        argv += ["--job_threads", str(args.job_threads)]
    return argv + (["--glue_dir", data["glue_dir"]] if data["glue_dir"] else [])


def results_digest(state: SearchState) -> str:
    """The search's outcome as the next level sees it: every finished model's score, and the failed models."""
    return digest({"scores": {h: state.candidates[h].score for h in state.finished},
                   "failed": sorted(c.model_hash for c in state.failed())})


def next_level(out: Path, library: Stage, search: Stage, state: SearchState) -> Path:
    """The finer library around the best models of the finished search (rebuilt when the search's results change)."""
    finer = out / "library_level2.json"
    argv = ["--old_dataset_file", str(library.output), "--run_dir", str(search.output), "--new_dataset_file", str(finer), *LEVEL2_FLAGS]

    def build() -> None:
        new, _ = next_level_library(hierarchy_args(argv))
        new.save(finer)

    inputs = {"upstream": {"graph library": library.digest, "search": search.digest}, "search results": results_digest(state),
              "flags": list(LEVEL2_FLAGS)}
    Stage("next-level library", finer, inputs).ensure(build)
    return finer


def stop_unless_finished(state: SearchState) -> None:
    """The next level is built from a whole search only: after an interrupted one, exit and let a re-run resume it."""
    if state.stopped is None:
        print("\nthe search was interrupted, so the next-level library waits for it; re-run the same command to resume the "
              "search (nothing finished is trained again), then the next level is built", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED)
    if not state.finished:
        raise SystemExit("the search ended without any scored model, so there is no next level to build; see the job logs "
                         "named above")


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
    tokenizer = tokenizer_stage(args, out, data)
    dataset = dataset_stage(args, out, data, tokenizer)
    step(3, f"graph library of {TINY_SPACE.name}")
    library = library_stage(out)
    step(4, f"{args.strategy} search with the local executor ({args.budget} models; re-running resumes)")
    search = search_stage(args, out, data, library, tokenizer, dataset)
    argv_search = search_argv(args, out, library.output, data, tokenizer.output, dataset.output)
    print("python -m flexibert.run_boshnas " + shlex.join(argv_search), flush=True)
    state = run_search(search_args(argv_search))
    stop_unless_finished(state)
    step(5, "hierarchical step: a finer library around the best models")
    finer = next_level(out, library, search, state)
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
    try:
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the search: a re-run rebuilds what was cut short
        print("\ninterrupted; re-run the same command to go on (an interrupted step is rebuilt, a search resumes)", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
