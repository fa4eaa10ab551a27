"""Knowledge transfer, measured: how many pretraining steps a warm start saves, and whether it reaches scratch quality.

    python benchmarks/transfer_benefit.py                      # CPU-sized: S = 200 steps, 2 seeds, ~40 min on 2 cores
    python benchmarks/transfer_benefit.py --steps 100 --seeds 0 --targets near far   # a quick look
    python benchmarks/transfer_benefit.py --steps 1000 --warm_seeds 1 --fractions 0.1 0.25 0.5 0.75 \
        --targets same near far deeper shallower middle narrower   # past the early plateau: ~75 min on 2 cores

A parent with BERT-Tiny's dimensions is pretrained from scratch for S steps. Each target architecture
(near, middle, far, deeper, shallower, wider, narrower, and the parent itself as a control) is then
pretrained twice over: from scratch for S steps, evaluated every S/10 steps (its learning curve), and
warm-started from the parent by weight transfer (RP) for a fraction of S steps, each fraction its own
run with its own learning-rate schedule, as the search runs it. Every model sees the same data (WikiText-2
train, a BPE tokenizer trained on it offline) and is evaluated on the same masked validation sequences.

The table prints, per target, the closeness measure beside the old scalar fraction (so their usefulness
is visible), the scratch model's loss after S steps (mean and sample std over seeds: the run-to-run
noise), each warm start's loss, and the smallest warm-start fraction whose loss is within the noise of
scratch@S. That last column is what the search's rule for warm-start steps has to respect.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout, like the other benchmarks

from scipy.stats import spearmanr  # noqa: E402

from flexibert import prepare_pretrain_dataset, save_roberta_tokenizer  # noqa: E402
from flexibert.models.weight_transfer import overlap_report  # noqa: E402
from flexibert.training.pretrain import parse_args as parse_pretrain_args  # noqa: E402
from flexibert.training.pretrain import pretrain  # noqa: E402

WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "wiki.train.tokens"


def _dict(ops, params, heads, hidden, ff):
    return {"l": len(ops), "o": list(ops), "h": list(hidden), "n": list(heads), "f": [list(f) for f in ff], "p": list(params)}


PARENT = _dict(["sa", "sa"], ["sdp", "sdp"], [2, 2], [128, 128], [[512], [512]])
TARGETS = {
    "same (control)": PARENT,
    "near: layer 2 sa -> l dct": _dict(["sa", "l"], ["sdp", "dct"], [2, 2], [128, 128], [[512], [512]]),
    "far: c9 + l dft, 4 heads, FF 1024": _dict(["c", "l"], [9, "dft"], [4, 4], [128, 128], [[1024], [1024]]),
    "deeper: two more sa layers": _dict(["sa"] * 4, ["sdp"] * 4, [2] * 4, [128] * 4, [[512]] * 4),
    "shallower: first layer only": _dict(["sa"], ["sdp"], [2], [128], [[512]]),
    "wider: hidden 256, 4 heads": _dict(["sa", "sa"], ["sdp", "sdp"], [4, 4], [256, 256], [[1024], [1024]]),
    "middle: layer 2 -> c9, 4 heads, FF 1024": _dict(["sa", "c"], ["sdp", 9], [2, 4], [128, 128], [[512], [1024]]),
    "narrower: hidden 64, FF 256": _dict(["sa", "sa"], ["sdp", "sdp"], [2, 2], [64, 64], [[256], [256]]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="runs/transfer_benefit", help="inputs and trained models (reused on a re-run)")
    parser.add_argument("--steps", type=int, default=200, help="S: pretraining steps from scratch")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5], help="warm-start steps as fractions of S")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="seeds of the scratch runs (the noise between them is measured)")
    parser.add_argument("--warm_seeds", type=int, help="how many of --seeds also warm-start (default: all; 1 halves a CPU run)")
    parser.add_argument("--targets", nargs="+", help="first words of the targets to run (default: all)")
    parser.add_argument("--lines", type=int, default=12000, help="lines of WikiText-2 train used as the corpus")
    parser.add_argument("--vocab_size", type=int, default=4000, help="BPE vocabulary (the MLM decoder dominates a tiny model's cost)")
    parser.add_argument("--seq_length", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warm_lr_scale", type=float, default=1.0,
                        help="a warm start's peak learning rate as a multiple of --learning_rate (the search uses 1)")
    parser.add_argument("--eval_samples", type=int, default=256, help="validation sequences every loss is measured on")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def prepare_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """The corpus slice, an 8k BPE tokenizer trained on it, and the packed dataset (built once, then reused)."""
    work = Path(args.work_dir) / f"inputs-{args.lines}-{args.vocab_size}-{args.seq_length}"
    if not (work / "dataset").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.txt"
        lines = WIKITEXT.read_text(encoding="utf-8").splitlines(keepends=True)[: args.lines]
        corpus.write_text("".join(lines), encoding="utf-8")
        save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", str(args.vocab_size),
                                     "--output_dir", str(work / "tokenizer"), "--overwrite"])
        prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(work / "tokenizer"), "--max_seq_length",
                                       str(args.seq_length), "--cache_dir", str(work / "hf_cache"),
                                       "--output_dir", str(work / "dataset")])
    return {"tokenizer": work / "tokenizer", "dataset": work / "dataset"}


def train(args, inputs, model_dict: dict, output: Path, steps: int, seed: int, init_from: Path | None = None,
          learning_rate: float | None = None) -> dict:
    """One pretraining run through the project's own pretrain(); reused when its results already exist."""
    results_file = output / "pretrain_results.json"
    if results_file.is_file():
        return json.loads(results_file.read_text())
    argv = ["--model_dict", json.dumps(model_dict), "--tokenizer", str(inputs["tokenizer"]), "--dataset_dir", str(inputs["dataset"]),
            "--max_seq_length", str(args.seq_length), "--output_dir", str(output), "--max_steps", str(steps), "--seed", str(seed),
            "--per_device_train_batch_size", str(args.batch_size), "--gradient_accumulation_steps", "1",
            "--learning_rate", str(learning_rate or args.learning_rate),
            "--warmup_steps", str(max(1, steps // 10)), "--max_eval_samples", str(args.eval_samples), "--save_steps", str(10 * steps),
            "--logging_steps", str(max(1, args.steps // 10)), "--report_to", "none"]
    if init_from is None:
        argv += ["--eval_steps", str(max(1, args.steps // 10))]
    else:
        argv += ["--init_from", str(init_from), "--transfer_mode", "RP"]
    return pretrain(parse_pretrain_args(argv))


def curve(output: Path) -> list[tuple[int, float]]:
    """(step, eval loss) of a scratch run's intermediate evaluations, from its trainer_state.json."""
    state = json.loads((output / "trainer_state.json").read_text())
    return [(entry["step"], entry["eval_loss"]) for entry in state["log_history"] if "eval_loss" in entry]


def steps_to_reach(points: list[tuple[int, float]], loss: float) -> int | None:
    """The first evaluated step of a scratch curve at or below ``loss`` (None: not within S steps)."""
    return next((step for step, value in points if value <= loss), None)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def measure_target(args, inputs, name: str, model_dict: dict) -> dict:
    """Scratch curve and warm starts of one target, over every seed."""
    slug = name.split(":")[0].split(" ")[0]
    work = Path(args.work_dir) / f"S{args.steps}-lr{args.learning_rate}"
    report = overlap_report(model_dict, PARENT)
    scratch, warm, reach = [], {f: [] for f in args.fractions}, []
    for seed in args.seeds:
        parent = work / f"parent-seed{seed}"
        train(args, inputs, PARENT, parent, args.steps, seed)
        output = work / f"{slug}-scratch-seed{seed}"
        scratch.append(train(args, inputs, model_dict, output, args.steps, seed)["eval_loss"])
        points = curve(output)
        if args.warm_seeds is not None and seed not in args.seeds[: args.warm_seeds]:
            continue
        for fraction in args.fractions:
            steps = max(1, round(fraction * args.steps))
            scaled = "" if args.warm_lr_scale == 1 else f"-lrx{args.warm_lr_scale:g}"
            loss = train(args, inputs, model_dict, work / f"{slug}-warm{steps}{scaled}-seed{seed}", steps, seed, init_from=parent,
                         learning_rate=args.learning_rate * args.warm_lr_scale)["eval_loss"]
            warm[fraction].append(loss)
            if fraction == args.fractions[0]:
                reach.append(steps_to_reach(points, loss))
    return {"target": name, "model_dict": model_dict, "closeness": report.closeness, "encoder_fraction": report.encoder_fraction,
            "scalar_fraction": report.scalar_fraction, "scratch": scratch, "warm": {str(f): v for f, v in warm.items()}, "reach": reach}


def _enough(row: dict, noise: float) -> str | None:
    """The smallest warm-start fraction (its key in ``row["warm"]``) whose mean loss is within ``noise`` of the scratch
    model's mean loss; None when no tried fraction got there."""
    target = statistics.fmean(row["scratch"]) + noise
    return next((fraction for fraction, losses in row["warm"].items() if statistics.fmean(losses) <= target), None)


def enough_fraction(row: dict, noise: float) -> str:
    """The table's cell for ``_enough``: the fraction, or "> " the largest tried."""
    enough = _enough(row, noise)
    return "> " + list(row["warm"])[-1] if enough is None else enough


def needed_fraction(row: dict, noise: float) -> float:
    """``_enough`` as a number; a target that no tried fraction brought within noise counts as needing all of S."""
    enough = _enough(row, noise)
    return 1.0 if enough is None else float(enough)


def ranking_line(args, rows: list[dict], noise: float) -> str:
    """How well the closeness (and the old scalar fraction) ranks the targets by what a warm start saves (Spearman).

    Two views of the saving: how many scratch steps a warm start of the first fraction is worth (more is
    better; a loss scratch never reaches within S counts as S), and the warm fraction that reaches scratch
    quality (less is better). The search's rule gives closer models fewer steps, so it needs both to rise
    with closeness.
    """
    if len(rows) < 3:
        return ""
    worth = [statistics.fmean([args.steps if r is None else r for r in row["reach"]]) for row in rows]
    needed = [-needed_fraction(row, noise) for row in rows]
    cells = []
    for measure in ("closeness", "scalar_fraction"):
        values = [row[measure] for row in rows]
        cells.append(f"{measure.replace('_', ' ')}: {spearmanr(values, worth)[0]:.2f} and {spearmanr(values, needed)[0]:.2f}")
    return (f"\nSpearman against the steps a warm start saves over {len(rows)} targets (scratch steps that a warm start of "
            f"{args.fractions[0]:g} S is worth; the warm fraction that reaches scratch quality, fewer first): " + "; ".join(cells))


def table(args, rows: list[dict]) -> str:
    noise = statistics.fmean([mean_sd(row["scratch"])[1] for row in rows]) if len(args.seeds) > 1 else 0.0
    head = ["target", "closeness (encoder, Dice)", "encoder fraction", "old scalar fraction", f"scratch @ S={args.steps}"]
    head += [f"warm @ {f:g} S" for f in args.fractions]
    head += [f"scratch steps to warm @ {args.fractions[0]:g} S", "warm fraction within noise of scratch @ S"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["target"], f"{row['closeness']:.3f}", f"{row['encoder_fraction']:.3f}", f"{row['scalar_fraction']:.3f}",
                 "{:.3f} ± {:.3f}".format(*mean_sd(row["scratch"]))]
        cells += ["{:.3f} ± {:.3f}".format(*mean_sd(losses)) for losses in row["warm"].values()]
        reach = [r for r in row["reach"] if r is not None]
        partial = f" ({len(reach)}/{len(row['reach'])} seeds)" if len(reach) < len(row["reach"]) else ""
        cells.append(f"{statistics.fmean(reach):.0f}{partial}" if reach else f"> {args.steps}")
        cells.append(enough_fraction(row, noise))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(ranking_line(args, rows, noise))
    lines.append(f"\nnoise: mean sample std of scratch @ S over targets = {noise:.3f} (seeds {args.seeds}); MLM validation loss, "
                 f"{args.eval_samples} sequences of {args.seq_length} tokens, vocabulary {args.vocab_size}, batch {args.batch_size}, "
                 f"lr {args.learning_rate:g}" + (f", warm starts at {args.warm_lr_scale:g} x lr" if args.warm_lr_scale != 1 else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    inputs = prepare_inputs(args)
    chosen = [name for name in TARGETS if not args.targets or name.split(":")[0].split(" ")[0] in args.targets]
    start, rows = time.perf_counter(), []
    for name in chosen:
        rows.append(measure_target(args, inputs, name, TARGETS[name]))
        print(f"[{time.perf_counter() - start:.0f}s] {name} done", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(args, rows))


if __name__ == "__main__":
    main()
