"""The GLUE tasks: a registry, and one loader for the Hugging Face hub and for local folders of GLUE TSVs.

Both sources give the same ``datasets.DatasetDict``, so everything downstream is written once:
splits ``train`` and ``validation`` (MNLI: ``validation_matched`` and ``validation_mismatched``; the test
splits have no labels and are left out), the text columns as the hub names them, ``label`` (a
``ClassLabel``; a float similarity score for STS-B) and ``idx`` (the row's number in its split).

Local files are read the way GLUE ships them: tab-separated with no quoting (MRPC, STS-B and RTE have
unbalanced ``"``), MRPC with a UTF-8 byte-order mark, CoLA without a header. Columns are found by their
header names, so MNLI's train (12 columns) and dev (16 columns) files read alike. A missing or malformed
file raises ``GlueError`` naming the file, the line and what was expected.

Tokenised tasks are saved once (:func:`tokenize_tasks`, the tokenize_glue_datasets.py stage) as
``<dataset_dir>/<task>/``, a ``save_to_disk`` folder with ``tokenization.json`` beside the splits
recording the tokenizer, so that fine-tuning (:func:`load_tokenized_glue`) refuses data made with another one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from flexibert.data.hub import require_hub
from flexibert.data.tokenization import load_tokenizer
from flexibert.utils.files import replaced_folder, write_json_atomic

HUB_DATASET = "nyu-mll/glue"
TOKENIZED_COLUMNS = ("input_ids", "attention_mask", "label")
TOKENIZATION_FILE = "tokenization.json"  # beside each tokenised task: the tokenizer and length it was made with


class GlueError(Exception):
    """A problem with GLUE data the user can fix (a missing or malformed file, an unknown task); scripts print it without a traceback."""


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its folder and TSV columns, the hub's column names, and its labels (None: regression)."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    tsv_text_columns: tuple[str, ...]
    tsv_label_column: str
    label_names: tuple[str, ...] | None
    tsv_label_values: tuple[str, ...] | None
    layout: tuple[str, ...] | None = None  # column names of a headerless file (CoLA); None: the first line is the header
    validation_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def validation_splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.validation_files)

    @property
    def files(self) -> dict[str, str]:
        """Split name -> TSV file name inside the task's folder."""
        return {"train": "train.tsv", **dict(self.validation_files)}

    def features(self) -> Features:
        """The hub's features for this task, so that local and hub datasets are interchangeable."""
        label = Value("float32") if self.label_names is None else ClassLabel(names=list(self.label_names))
        return Features({**{c: Value("string") for c in self.text_columns}, "label": label, "idx": Value("int32")})


_BINARY = ("0", "1")
TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", ("sentence",), ("sentence",), "label", ("unacceptable", "acceptable"), _BINARY,
                 layout=("source", "label", "original_label", "sentence")),
        GlueTask("sst2", "SST-2", ("sentence",), ("sentence",), "label", ("negative", "positive"), _BINARY),
        GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality",
                 ("not_equivalent", "equivalent"), _BINARY),
        GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", None, None),
        GlueTask("qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate",
                 ("not_duplicate", "duplicate"), _BINARY),
        GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
                 validation_files=(("validation_matched", "dev_matched.tsv"), ("validation_mismatched", "dev_mismatched.tsv"))),
        GlueTask("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label",
                 ("entailment", "not_entailment"), ("entailment", "not_entailment")),
        GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                 ("entailment", "not_entailment"), ("entailment", "not_entailment")),
        GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                 ("not_entailment", "entailment"), _BINARY),
    )
}
GLUE_TASKS: tuple[str, ...] = tuple(TASKS)


def get_task(name: str | GlueTask) -> GlueTask:
    """Look a task up by its hub name or its GLUE folder name (``sst2``, ``SST-2``, ``sts-b`` all work)."""
    if isinstance(name, GlueTask):
        return name
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise GlueError(f"unknown GLUE task {name!r}; choose from {', '.join(GLUE_TASKS)}")
    return TASKS[key]


def _split_fields(path: Path, lineno: int, raw: bytes) -> list[str]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GlueError(f"{path}, line {lineno}: not valid UTF-8 ({err}); GLUE TSVs are UTF-8 text") from err
    if lineno == 1:
        line = line.removeprefix("\ufeff")  # MRPC starts with a byte-order mark
    return line.rstrip("\r\n").split("\t")


def _parse_label(task: GlueTask, path: Path, lineno: int, value: str) -> int | float:
    if task.tsv_label_values is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise GlueError(f"{path}, line {lineno}: bad label {value!r} in column {task.tsv_label_column!r}; "
                            "expected a similarity score (a number from 0 to 5)")
        return score
    if value not in task.tsv_label_values:
        allowed = ", ".join(repr(v) for v in task.tsv_label_values)
        raise GlueError(f"{path}, line {lineno}: bad label {value!r} in column {task.tsv_label_column!r}; expected one of {allowed}")
    return task.tsv_label_values.index(value)


def read_glue_tsv(task: str | GlueTask, path: str | Path) -> dict[str, list]:
    """Read one labelled GLUE TSV (train or dev) into columns ``<text columns>, label, idx``.

    Lines are split on tabs only (no quoting); empty lines are skipped. Every row must have as many
    fields as the header (CoLA: 4), and every label must be one the task knows.
    """
    task, path = get_task(task), Path(path)
    if not path.is_file():
        wanted = " and ".join(f"{task.folder}/{name}" for name in task.files.values())
        raise GlueError(f"{path}: file not found; in the GLUE layout, --glue_dir holds {wanted} "
                        f"(or leave --glue_dir out to load {task.name} from the hub)")
    needed = (*task.tsv_text_columns, task.tsv_label_column)
    columns: dict[str, list] = {name: [] for name in (*task.text_columns, "label", "idx")}
    with path.open("rb") as handle:
        header = task.layout
        if header is None:
            first = handle.readline()
            if not first.strip():
                raise GlueError(f"{path}, line 1: no header; expected the columns {', '.join(needed)} (tab-separated)")
            header = tuple(_split_fields(path, 1, first))
            missing = [name for name in needed if name not in header]
            if missing:
                raise GlueError(f"{path}, line 1: the header lacks column(s) {', '.join(map(repr, missing))}; expected the "
                                f"{task.folder} layout with columns {', '.join(needed)}, found {', '.join(map(repr, header))}")
        positions = [header.index(name) for name in task.tsv_text_columns]
        label_position = header.index(task.tsv_label_column)
        for lineno, raw in enumerate(handle, start=1 if task.layout else 2):
            if not raw.strip(b"\r\n"):
                continue
            fields = _split_fields(path, lineno, raw)
            if len(fields) != len(header):
                raise GlueError(f"{path}, line {lineno}: expected {len(header)} tab-separated fields ({', '.join(header)}), "
                                f"found {len(fields)}; GLUE TSVs have no quoting, so check for a stray or missing tab")
            for name, position in zip(task.text_columns, positions, strict=True):
                columns[name].append(fields[position])
            columns["label"].append(_parse_label(task, path, lineno, fields[label_position]))
            columns["idx"].append(len(columns["idx"]))
    if not columns["idx"]:
        raise GlueError(f"{path}: no data rows; expected labelled {task.folder} examples after the header")
    return columns


def load_glue(task: str | GlueTask, glue_dir: str | Path | None = None, cache_dir: str | None = None) -> DatasetDict:
    """One task's labelled splits, from ``glue_dir/<TASK>/*.tsv`` when given, else from the hub (``nyu-mll/glue``)."""
    task = get_task(task)
    if glue_dir is not None:
        folder = Path(glue_dir) / task.folder
        if not Path(glue_dir).is_dir():
            raise GlueError(f"--glue_dir {glue_dir}: no such folder; give the folder that holds {task.folder}/train.tsv")
        return DatasetDict({
            split: Dataset.from_dict(read_glue_tsv(task, folder / name), features=task.features())
            for split, name in task.files.items()
        })
    try:
        require_hub(f"GLUE {task.name!r}", datasets=True)  # offline: the error at once, not after the client's retries
        hub = load_dataset(HUB_DATASET, task.name, cache_dir=cache_dir)
    except (OSError, ValueError) as err:
        raise GlueError(f"cannot load GLUE {task.name!r} from the Hugging Face hub ({HUB_DATASET}): {err}\n"
                        f"Offline, pass --glue_dir DIR with the GLUE TSVs ({task.folder}/train.tsv, ...); with a warm "
                        "cache, set HF_DATASETS_OFFLINE=1.") from err
    return DatasetDict({split: hub[split] for split in task.files})


def tokenize_glue(
    dataset: DatasetDict, task: str | GlueTask, tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 128
) -> DatasetDict:
    """Encode each example (pairs as the tokenizer's sentence pairs), truncated, unpadded: collators pad per batch.

    Keeps only ``input_ids``, ``attention_mask`` and ``label``; token type ids are dropped because
    FlexiBERT with a RoBERTa-style tokenizer has a single token type.
    """
    task = get_task(task)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[column] for column in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_seq_length, return_token_type_ids=False)

    drop = [c for c in next(iter(dataset.values())).column_names if c != "label"]
    return dataset.map(encode, batched=True, remove_columns=drop, desc=f"tokenizing {task.name}")


def glue_row_counts(tasks: Sequence[str], glue_dir: str | Path | None = None, cache_dir: str | None = None) -> dict[str, dict[str, int]]:
    """Load each task (filling the datasets cache, or checking a GLUE folder); returns task -> split -> number of rows."""
    counts = {}
    for name in tqdm(tasks, desc="loading GLUE", unit="task"):
        task = get_task(name)
        counts[task.name] = {split: len(rows) for split, rows in load_glue(task, glue_dir, cache_dir).items()}
    return counts


def tokenize_tasks(tasks: Sequence[str], tokenizer: str | Path, output_dir: str | Path, *, max_seq_length: int = 128,
                   glue_dir: str | Path | None = None, cache_dir: str | None = None, overwrite: bool = False) -> dict[str, int]:
    """Tokenise and save each task as ``output_dir/<task>/`` (saved ones kept unless ``overwrite``); returns task -> examples written."""
    if max_seq_length < 1:
        raise GlueError(f"--max_seq_length {max_seq_length} must be at least 1")
    try:
        encoder = load_tokenizer(tokenizer)
    except (OSError, ValueError) as err:
        raise GlueError(str(err)) from err
    output = Path(output_dir)
    written = {}
    for name in tqdm(tasks, desc="tokenising GLUE", unit="task"):
        task = get_task(name)
        target = output / task.name
        if (target / "dataset_dict.json").is_file() and not overwrite:
            tqdm.write(f"{task.name}: kept {target} (pass --overwrite to redo it)")
            continue
        data = tokenize_glue(load_glue(task, glue_dir, cache_dir), task, encoder, max_seq_length)
        with replaced_folder(target) as staging:
            data.save_to_disk(str(staging))
            write_json_atomic(staging / TOKENIZATION_FILE, {
                "task": task.name, "tokenizer": str(tokenizer), "vocab_size": len(encoder), "pad_token_id": encoder.pad_token_id,
                "max_seq_length": max_seq_length, "source": str(glue_dir) if glue_dir else HUB_DATASET,
            })
        written[task.name] = sum(len(split) for split in data.values())
    return written


def load_tokenized_glue(dataset_dir: str | Path, task: str | GlueTask, tokenizer: PreTrainedTokenizerBase) -> tuple[DatasetDict, int]:
    """A task saved by :func:`tokenize_tasks` in ``dataset_dir/<task>/``, made with ``tokenizer``; returns it and the length it was
    truncated to."""
    task = get_task(task)
    folder = Path(dataset_dir) / task.name
    meta_path = folder / TOKENIZATION_FILE
    if not (folder / "dataset_dict.json").is_file() or not meta_path.is_file():
        raise GlueError(f"--dataset_dir {dataset_dir}: no tokenised {task.name} dataset in {folder}; make it with "
                        f"`python flexibert/tokenize_glue_datasets.py --tokenizer DIR --tasks {task.name} --output_dir {dataset_dir}`")
    meta = json.loads(meta_path.read_text())
    if meta["task"] != task.name:
        raise GlueError(f"{folder} holds task {meta['task']!r}, not {task.name!r}")
    if (meta["vocab_size"], meta["pad_token_id"]) != (len(tokenizer), tokenizer.pad_token_id):
        raise GlueError(f"{folder} was tokenised with another tokenizer ({meta['tokenizer']}: size {meta['vocab_size']}, pad id "
                        f"{meta['pad_token_id']}) than this one (size {len(tokenizer)}, pad id {tokenizer.pad_token_id}); "
                        "re-run tokenize_glue_datasets.py with the model's tokenizer")
    data = load_from_disk(str(folder))
    for split in ("train", *task.validation_splits):
        if split not in data or not set(TOKENIZED_COLUMNS) <= set(data[split].column_names):
            raise GlueError(f"{folder}: expected split {split!r} with columns {', '.join(TOKENIZED_COLUMNS)}; "
                            "re-run tokenize_glue_datasets.py")
    return data, meta["max_seq_length"]
