"""Pretraining throughput of FlexiBERT against transformers' BertForMaskedLM, and the wall time of a CPU demo pretraining.

    python benchmarks/bench_pretrain.py [--threads 1] [--seq_len 128] [--batch_size 16] [--steps 30] [--repeats 5]

Table 1: training tokens/s of BERT-Tiny dims (2 layers, h 128, 2 heads, FF 512) in the Trainer setup of
pretrain_flexibert.py (same flags, collator and data: WikiText-2 packed into --seq_len tokens):
``BertForMaskedLM``, the BERT-equivalent FlexiBERT (absolute positions) and FlexiBERT with its default
relative-key scores. Each timed run trains --steps steps; runs go round-robin over the models
--repeats times and the median step time (first 3 steps of a run excluded) is reported, so drift in
machine speed hits all models alike. Target: FlexiBERT (absolute) / BERT >= 1.0.
Table 2: wall time of each stage of a demo pretraining at tiny CPU settings (offline tokenizer,
dataset preparation, ``pretrain_flexibert.py --max_steps --demo_steps``), with its loss before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even where another checkout is installed in editable mode

from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, prepare_pretrain_dataset, pretrain_flexibert, save_roberta_tokenizer  # noqa: E402
from flexibert.data.tokenization import load_tokenizer  # noqa: E402
from flexibert.training.settings import training_arguments  # noqa: E402
from flexibert.utils.cli import HelpFormatter  # noqa: E402

WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "wiki.train.tokens"
BERT_TINY = {"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}
WARMUP_STEPS = 3


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def models(vocab_size: int, pad_token_id: int) -> dict[str, torch.nn.Module]:
    """The three models of table 1, with BERT-Tiny dims and the tokenizer's vocabulary."""
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=512, max_position_embeddings=514, type_vocab_size=1, pad_token_id=pad_token_id))
    flexi = {kind: FlexiBERTForMaskedLM(FlexiBERTConfig.from_model_dict(BERT_TINY, vocab_size=vocab_size, pad_token_id=pad_token_id,
                                                                        position_embedding_type=kind))
             for kind in ("absolute", "relative_key")}
    return {"BertForMaskedLM": bert, "FlexiBERT (absolute)": flexi["absolute"], "FlexiBERT (relative_key)": flexi["relative_key"]}


def throughput_table(args: argparse.Namespace, tokenizer_dir: Path, dataset_dir: Path, work: Path) -> list[str]:
    tokenizer = load_tokenizer(tokenizer_dir)
    train = load_from_disk(str(dataset_dir))["train"]
    flags = pretrain_flexibert.parse_args(["--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch_size),
                                           "--gradient_accumulation_steps", "1", "--warmup_steps", "0"])
    training_args = training_arguments(flags, output_dir=work / "bench", remove_unused_columns=False, save_strategy="no",
                                       logging_strategy="no", disable_tqdm=True)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    built = models(len(tokenizer), tokenizer.pad_token_id)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.repeats):
        for name, model in built.items():
            timer = StepTimer()
            trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator, callbacks=[timer])
            trainer.model_accepts_loss_kwargs = not name.startswith("FlexiBERT")  # as pretrain_flexibert.py does
            with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its metrics when tqdm is off
                trainer.train()
            times[name].extend(timer.times[WARMUP_STEPS:])
    tokens = args.batch_size * args.seq_len
    bert = tokens / statistics.median(times["BertForMaskedLM"])
    rows = [f"| model (BERT-Tiny dims, batch {args.batch_size} x {args.seq_len}) | train tokens/s | ratio to BERT |", "|---|---|---|"]
    for name, values in times.items():
        speed = tokens / statistics.median(values)
        rows.append(f"| {name} | {speed:,.0f} | {speed / bert:.2f} |")
    return rows


def demo_table(args: argparse.Namespace, text_file: Path, work: Path) -> tuple[list[str], Path, Path]:
    """Run the demo pipeline stage by stage; returns the table and the tokenizer and dataset it made."""
    tokenizer_dir, dataset_dir = work / "tokenizer", work / "dataset"
    stages: list[tuple[str, float]] = []
    quiet = contextlib.redirect_stdout(io.StringIO())

    start = time.perf_counter()
    with quiet:
        save_roberta_tokenizer.main(["--train_files", str(text_file), "--vocab_size", str(args.vocab_size),
                                     "--output_dir", str(tokenizer_dir)])
    stages.append((f"save_roberta_tokenizer.py --train_files (WikiText-2 train, vocab {args.vocab_size:,})", time.perf_counter() - start))

    start = time.perf_counter()
    with quiet:
        prepare_pretrain_dataset.main(["--text_files", str(text_file), "--tokenizer", str(tokenizer_dir), "--max_seq_length",
                                       str(args.seq_len), "--cache_dir", str(work / "cache"), "--output_dir", str(dataset_dir)])
    stages.append((f"prepare_pretrain_dataset.py --max_seq_length {args.seq_len}", time.perf_counter() - start))

    start = time.perf_counter()
    with quiet:
        results = pretrain_flexibert.main([
            "--model_dict", json.dumps(BERT_TINY), "--tokenizer", str(tokenizer_dir), "--dataset_dir", str(dataset_dir),
            "--max_seq_length", str(args.seq_len), "--max_steps", str(args.demo_steps), "--warmup_steps", str(args.demo_steps // 10),
            "--learning_rate", "1e-3", "--per_device_train_batch_size", str(args.batch_size), "--gradient_accumulation_steps", "1",
            "--save_steps", str(args.demo_steps // 2), "--logging_steps", str(args.demo_steps), "--max_eval_samples", "256",
            "--eval_before_training", "--output_dir", str(work / "model"),
        ])
    stages.append((f"pretrain_flexibert.py BERT-Tiny, {args.demo_steps} steps of {args.batch_size} x {args.seq_len}, lr 1e-3",
                   time.perf_counter() - start))
    rows = ["| demo stage | wall time (s) |", "|---|---|", *(f"| {name} | {seconds:.1f} |" for name, seconds in stages),
            f"| total | {sum(seconds for _, seconds in stages):.1f} |"]
    rows.append(f"\nMLM validation loss {results['initial_eval_loss']:.2f} -> {results['eval_loss']:.2f} "
                f"({results['tokens_per_second']:,.0f} tokens/s while training, {results['num_parameters']:,} parameters)")
    return rows, tokenizer_dir, dataset_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--text_file", type=Path, default=WIKITEXT, help="training text (WikiText-2 train from the shared data)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--seq_len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per step")
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed run (table 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model, round-robin (table 1)")
    parser.add_argument("--vocab_size", type=int, default=8000, help="vocabulary of the offline tokenizer")
    parser.add_argument("--demo_steps", type=int, default=200, help="pretraining steps of the demo run (table 2)")
    args = parser.parse_args(argv)
    if not args.text_file.is_file():
        raise SystemExit(f"error: {args.text_file} not found; pass --text_file with any plain-text corpus")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), text {args.text_file.name}\n")
    with tempfile.TemporaryDirectory() as tmp:
        demo, tokenizer_dir, dataset_dir = demo_table(args, args.text_file, Path(tmp))
        print("\n".join(throughput_table(args, tokenizer_dir, dataset_dir, Path(tmp))))
        print()
        print("\n".join(demo))


if __name__ == "__main__":
    main()
