"""The pretraining corpus: text from hub corpora or local files, tokenised and packed into fixed-length sequences.

``prepare`` builds the packed DatasetDict; ``prepare_and_save`` writes it with its ``preparation.json``
(what pretraining checks the tokenizer and length against, see ``read_preparation``). The stage
script ``flexibert/prepare_pretrain_dataset.py`` documents the sources, the pipeline and the output
contract; its flags are defined here so that other stages (the demo) prepare a corpus the same way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from itertools import chain, islice
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value, concatenate_datasets, load_dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from flexibert.data.hub import is_local, require_hub
from flexibert.data.tokenization import load_tokenizer, text_problem
from flexibert.utils.cli import HelpFormatter
from flexibert.utils.files import replaced_folder, write_json_atomic

HUB_CORPORA: dict[str, tuple[str, str | None]] = {
    "wikipedia": ("wikimedia/wikipedia", "20231101.en"),
    "bookcorpus": ("bookcorpus/bookcorpus", None),
    "cc_news": ("vblagoje/cc_news", None),
    "openwebtext": ("Skylion007/openwebtext", None),
    "c4": ("allenai/c4", "en"),
}
DEFAULT_HUB_CORPORA = ["wikipedia", "bookcorpus"]
FEATURES = Features({"input_ids": List(Value("int32")), "special_tokens_mask": List(Value("int8"))})


class CorpusError(ValueError):
    """The corpus cannot be prepared as asked (an output folder in the way); the message says how to fix it."""


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    source = parser.add_argument_group("sources (default: --hub_datasets wikipedia bookcorpus)")
    source.add_argument("--hub_datasets", nargs="+", default=None, metavar="NAME",
                        help=f"hub corpora: short names ({', '.join(HUB_CORPORA)}) or PATH[:CONFIG] of a dataset with a 'text' column")
    source.add_argument("--text_files", nargs="+", default=None, metavar="FILE", help="local plain-text files, one example per line")
    source.add_argument("--max_samples", type=int, default=None,
                        help="keep only the first N rows (lines / documents) of each source, for small runs; streams hub corpora")
    parser.add_argument("--tokenizer", default="roberta_tokenizer",
                        help="tokenizer folder (from save_roberta_tokenizer.py) or hub name")
    parser.add_argument("--max_seq_length", type=int, default=512, help="tokens per packed sequence")
    parser.add_argument("--validation_fraction", type=float, default=0.05, help="fraction of rows held out for validation")
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/validation split")
    parser.add_argument("--num_proc", type=int, default=1, help="processes for loading and tokenising (fast tokenizers also use threads)")
    parser.add_argument("--batch_size", type=int, default=1000,
                        help="rows per map batch; each batch's last partial chunk (< max_seq_length tokens) is dropped")
    parser.add_argument("--cache_dir", default=None, help="Hugging Face datasets cache (default: HF_DATASETS_CACHE)")
    parser.add_argument("--output_dir", default="tokenized_pretraining_dataset", help="folder to save the DatasetDict to")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --output_dir")
    return parser.parse_args(argv)


def resolve_hub_name(name: str) -> tuple[str, str | None]:
    """(path, config) of a short corpus name or of ``PATH[:CONFIG]``."""
    if name in HUB_CORPORA:
        return HUB_CORPORA[name]
    path, _, config = name.partition(":")
    return path, config or None


def load_hub_corpus(name: str, max_samples: int | None, num_proc: int, cache_dir: str | None) -> Dataset:
    """The ``text`` column of a hub corpus's train split; only the first ``max_samples`` rows (streamed) when given."""
    path, config = resolve_hub_name(name)
    kwargs = {"num_proc": num_proc} if max_samples is None else {"streaming": True}
    try:
        if not is_local(path):  # a local dataset folder never reaches the hub; offline, a hub corpus fails at once
            require_hub(f"the corpus {name!r}", datasets=True)
        try:
            corpus = load_dataset(path, config, split="train", cache_dir=cache_dir, **kwargs)
        except RuntimeError as err:
            if "scripts are no longer supported" not in str(err):
                raise
            # A legacy script dataset: the hub's parquet export of it loads without running the script.
            corpus = load_dataset(path, config, split="train", cache_dir=cache_dir, revision="refs/convert/parquet", **kwargs)
        if max_samples is not None:
            rows = tqdm(islice(corpus, max_samples), total=max_samples, desc=f"streaming {name}", unit="row")
            corpus = Dataset.from_dict({"text": [row["text"] for row in rows]})
    except Exception as err:  # the hub raises many types (connection, missing config, legacy script); all mean "cannot load"
        raise SystemExit(
            f"error: cannot load hub corpus {name!r} ({path}{':' + config if config else ''}): {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}\nCheck the name (short names: {', '.join(HUB_CORPORA)}; or PATH[:CONFIG]); "
            "without the hub, use local files: --text_files FILE [FILE ...]"
        ) from None
    if "text" not in corpus.column_names:
        raise SystemExit(f"error: hub corpus {name!r} has no 'text' column (columns: {corpus.column_names})")
    return corpus.select_columns(["text"])


def load_text_files(files: Sequence[str], max_samples: int | None, cache_dir: str | None) -> Dataset:
    """Local text files as one dataset, one row per line."""
    corpus = load_dataset("text", data_files={"train": list(files)}, split="train", cache_dir=cache_dir)
    return corpus.select(range(min(max_samples, len(corpus)))) if max_samples is not None else corpus


def check_text_files(files: Sequence[str]) -> None:
    """Refuse, on one line and before any loading or tokenising, text files that hold no usable text.

    Missing paths come first, on their own (a typo, fixed differently). The rest of the diagnosis (empty, only whitespace,
    binary or not UTF-8 with the byte offset, a folder) is the tokenizer's (``text_problem``), so both stages judge a file
    alike; the datasets text builder would otherwise fail with a traceback.
    """
    missing = [str(f) for f in files if not Path(f).exists()]
    if missing:
        raise SystemExit(f"error: --text_files not found: {', '.join(missing)}; check the paths of your corpus's text files")
    problems = [f"{f} {problem}" for f in files if (problem := text_problem(f))]
    if problems:
        raise SystemExit(f"error: --text_files cannot be prepared: {'; '.join(problems)}; give plain-text files of your corpus "
                         "in UTF-8 (convert other encodings first) and leave out empty ones")


def has_text(rows: Dataset) -> bool:
    """Whether any row holds more than whitespace (the packer drops the others); stops at the first batch that does."""
    return any(text.strip() for batch in rows.iter(batch_size=1000) for text in batch["text"])


def rows(n: int) -> str:
    """``n`` rows, in words ("1 row", "2,000 rows"), for the corpus errors."""
    return f"{n:,} row{'' if n == 1 else 's'}"


def more_text(args: argparse.Namespace) -> str:
    """The first fix of a corpus that is too small: more text, which --max_samples may be holding back."""
    return "give more text (or a larger --max_samples)" if args.max_samples is not None else "give more text"


def check_splits_have_text(corpus: Dataset, splits: DatasetDict, args: argparse.Namespace, sources: str) -> None:
    """Refuse, before tokenising, a corpus whose rows are all blank, or a split that gets no text from the row split.

    Every file has text (``check_text_files``), but --max_samples may keep only leading blank lines (WikiText starts with
    some), and a few rows may all go to one split; packing would then end in an empty split without saying why.
    """
    if not has_text(corpus):
        kept = f", --max_samples {args.max_samples}" if args.max_samples is not None else ""
        raise SystemExit(f"error: nothing to prepare: {sources} give only blank lines ({rows(len(corpus))} read{kept}); "
                         f"{more_text(args)}")
    for name, split in splits.items():
        if not has_text(split):
            got = f"{len(split):,} of the {rows(len(corpus))}, all blank," if len(split) else f"none of the {rows(len(corpus))}"
            fix = "a smaller" if name == "train" else "a larger"
            raise SystemExit(f"error: the {name} split gets no text: --validation_fraction {args.validation_fraction} puts {got} "
                             f"of {sources} in it; {more_text(args)} or pass {fix} --validation_fraction")


def check_packed(packed: DatasetDict, splits: DatasetDict, args: argparse.Namespace) -> None:
    """Refuse, before anything is saved, a split too short for one full sequence; the fix depends on the split."""
    for name, split in packed.items():
        if len(split) == 0:
            fix = "a smaller" if name == "train" else "a larger"
            batches = (f", or a larger --batch_size (each batch of {rows(args.batch_size)} drops its last partial sequence)"
                       if len(splits[name]) > args.batch_size else "")
            raise SystemExit(f"error: the {name} split ({rows(len(splits[name]))}) has no complete {args.max_seq_length}-token "
                             f"sequence; {more_text(args)}, pass a smaller --max_seq_length or {fix} --validation_fraction{batches}")


def split_rows(corpus: Dataset, validation_fraction: float, seed: int) -> DatasetDict:
    """A seeded random row-level split; each split keeps the corpus order (consecutive lines stay together)."""
    order = np.random.default_rng(seed).permutation(len(corpus))
    n_validation = round(len(corpus) * validation_fraction)
    return DatasetDict(
        train=corpus.select(np.sort(order[n_validation:])),
        validation=corpus.select(np.sort(order[:n_validation])),
    )


def packer(tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> Callable[[dict[str, list]], dict[str, np.ndarray]]:
    """The batched ``map`` function: tokenise rows, concatenate, cut into max_seq_length chunks (linear time)."""
    special_ids = np.array(sorted(set(tokenizer.all_special_ids)))

    def pack(batch: dict[str, list]) -> dict[str, np.ndarray]:
        texts = [t for t in (text.strip() for text in batch["text"]) if t]
        # A batch of blank lines only (WikiText has runs of them) packs to nothing: a fast tokenizer fails on an empty list.
        encoded = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False) if texts else {"input_ids": []}
        ids = np.fromiter(chain.from_iterable(encoded["input_ids"]), dtype=np.int32)
        ids = ids[: len(ids) // max_seq_length * max_seq_length].reshape(-1, max_seq_length)
        return {"input_ids": ids, "special_tokens_mask": np.isin(ids, special_ids).astype(np.int8)}

    return pack


def prepare(args: argparse.Namespace) -> tuple[DatasetDict, dict]:
    """Load the sources, split, tokenise and pack; returns the DatasetDict (not yet saved) and what preparation.json records."""
    if args.max_seq_length < 2:
        raise SystemExit("error: --max_seq_length must be at least 2")
    if not 0 < args.validation_fraction < 1:
        raise SystemExit("error: --validation_fraction must be between 0 and 1 (exclusive)")
    if args.max_samples is not None and args.max_samples < 1:
        raise SystemExit("error: --max_samples must be positive")
    check_text_files(args.text_files or [])
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except OSError as err:
        raise SystemExit(f"error: {err}") from None
    hub = args.hub_datasets or ([] if args.text_files else DEFAULT_HUB_CORPORA)
    sources = [load_hub_corpus(name, args.max_samples, args.num_proc, args.cache_dir) for name in hub]
    if args.text_files:
        sources.append(load_text_files(args.text_files, args.max_samples, args.cache_dir))
    corpus = concatenate_datasets(sources) if len(sources) > 1 else sources[0]
    splits = split_rows(corpus, args.validation_fraction, args.seed)
    check_splits_have_text(corpus, splits, args, ", ".join([*hub, *(args.text_files or [])]))
    packed = splits.map(
        packer(tokenizer, args.max_seq_length),
        batched=True,
        batch_size=args.batch_size,
        num_proc=args.num_proc if args.num_proc > 1 else None,
        remove_columns=corpus.column_names,
        features=FEATURES,
        desc=f"tokenising and packing into {args.max_seq_length}-token sequences",
    )
    check_packed(packed, splits, args)
    sizes = {name: len(split) for name, split in packed.items()}
    info = {
        "tokenizer": str(args.tokenizer), "vocab_size": len(tokenizer), "sources": [*hub, *(args.text_files or [])], "rows": len(corpus),
        "max_samples": args.max_samples, "validation_fraction": args.validation_fraction, "seed": args.seed, "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length, "sequences": sizes, "tokens": {name: n * args.max_seq_length for name, n in sizes.items()},
    }
    return packed, info


def read_preparation(dataset_dir: str | Path) -> dict:
    """The ``preparation.json`` of a prepared dataset ({} for datasets prepared elsewhere)."""
    path = Path(dataset_dir) / "preparation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def prepare_and_save(args: argparse.Namespace) -> tuple[DatasetDict, dict]:
    """Tokenise and pack the corpus of ``args`` and save it in ``args.output_dir`` with its preparation.json.

    The dataset is saved beside the target and swapped in, so an interrupted run never leaves a
    half-written dataset behind; an existing folder is replaced only with --overwrite, and only if it
    is a saved dataset.
    """
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()):
        if not args.overwrite:
            raise CorpusError(f"{output} already exists and is not empty; pass --overwrite to replace it "
                             "or choose another --output_dir")
        if not (output / "dataset_dict.json").is_file():
            raise CorpusError(f"{output} is not a saved dataset (no dataset_dict.json); --overwrite replaces only datasets, "
                             "choose another --output_dir")
    packed, info = prepare(args)
    with replaced_folder(output) as staging:
        packed.save_to_disk(str(staging))
        write_json_atomic(staging / "preparation.json", info)
    return packed, info
