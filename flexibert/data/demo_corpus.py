"""Offline demo data made from the English prose every Python ships (``pydoc_data``): a corpus and two GLUE-layout tasks.

``prepare_demo_data`` builds (or keeps, when the manifest matches) the folder that the stage script
``flexibert/prepare_demo_data.py`` describes. The labels are synthetic: this is NOT GLUE; it exists so
that the whole pipeline runs, and can be tested, without a network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import shutil
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from flexibert.utils.files import new_temporary_folder, write_json_atomic

GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
OUTPUTS = ("corpus", "glue", "DATA.md")  # what a build writes (besides the manifest), replaced as a whole by --overwrite
TASKS = ("cola", "rte")
SOURCE = "pydoc_data.topics.topics"

# Sentences used as GLUE examples: real prose of moderate length, mostly words rather than code.
MIN_WORDS, MAX_WORDS = 5, 50
MIN_WORD_FRACTION = 0.6  # of whitespace tokens that are plain words (letters, optionally one trailing punctuation mark)
MIN_SHUFFLE_UNITS = 4  # a sentence needs this many movable units (words, quoted or bracketed spans) to be shuffled

_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")
_TABLE = ("+-", "+=", "|")
_CODE = re.compile(r">>>|::=|^\s*\.\.\.\s|[{]\s*$", re.M)
_ADMONITION = re.compile(r"^(?:Note|Notes|Warning|Warnings|See also|Seealso|Attention|Caution|Important|Tip|Hint"
                         r"|CPython implementation detail)s?:$", re.I)
_LIST_MARKER = re.compile(r"^(?:[*\-•]\s+|\(?\d{1,2}[.)]\s+|\(?[a-z][.)]\s+)")
_EMPHASIS = re.compile(r'(?<![\w*"“])(\*{1,2})(?=[^\s*"])([^*]+?)(?<=[^\s*])\1(?![\w*"”])')
_FOOTNOTE = re.compile(r"\s*\[\d+\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"“(]?[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "a.k.a.", "approx.", "resp.")
_WORD = re.compile(r"[(\"“]?[A-Za-z][a-z’']*[)\"”]?[,.;:?!]?")
# Units that a shuffle moves whole, so quotes and brackets stay balanced: "quoted code", (a parenthesis), a word.
_UNIT = re.compile(r'"[^"]*"\S*|“[^”]*”\S*|\([^()]*\)\S*|\S+')


class DemoDataError(Exception):
    """A problem the user can fix (an occupied output folder, bad sizes); the script prints it without a traceback."""


@dataclass
class Topic:
    """One documentation topic after cleaning: its paragraphs, each a list of (sentence, position) with positions
    consecutive exactly where the sentences were adjacent in the original text."""

    name: str
    paragraphs: list[list[tuple[str, int]]] = field(default_factory=list)

    def sentences(self) -> list[str]:
        return [s for paragraph in self.paragraphs for s, _ in paragraph]


# ---------------------------------------------------------------------------------------------
# From pydoc's plain-text rendering to paragraphs and sentences
# ---------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """One line of plain text: no control characters, every run of whitespace (tabs, newlines, U+2028...) one space."""
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return " ".join(text.split())


def _blocks(text: str) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join_lines(lines: list[str]) -> str:
    """Re-flow wrapped lines; a line broken after a hyphen ("pre-" / "computed") is joined without a space."""
    text = ""
    for line in (line.strip() for line in lines):
        if re.search(r"[A-Za-z]-$", text) and line[:1].isalpha():
            text += line
        else:
            text = f"{text} {line}" if text else line
    return text


def prose_blocks(text: str) -> list[str | None]:
    """The text's blocks (separated by blank lines), each as one re-flowed paragraph of prose, or None where it is
    not prose: a heading, table, grammar rule, interactive session or code block (an indented block after a
    paragraph that ends with ":" is one)."""
    out: list[str | None] = []
    introduces_code = False
    for block in _blocks(text):
        lines: list[str] = []
        for line in block:
            if _UNDERLINE.match(line):  # the line above an underline is a heading
                if lines:
                    lines.pop()
                out.append(None)  # a heading breaks the text: the sentences around it are not consecutive
                continue
            lines.append(line)
        if not lines:
            continue
        # A definition list: a term (a signature, a short name) above its indented description.
        if len(lines) > 1 and _indent(lines[1]) > _indent(lines[0]) and not lines[0].rstrip().endswith((".", "!", "?")):
            lines = lines[1:]
        paragraph = _join_lines(lines)
        indented = _indent(lines[0]) > 0
        code = (
            lines[0].lstrip().startswith(_TABLE)
            or bool(_CODE.search("\n".join(lines)))
            or (indented and (introduces_code or not (paragraph[:1].isupper() or paragraph[:1] in "\"“(" or _LIST_MARKER.match(paragraph))))
        )
        admonition = bool(_ADMONITION.match(paragraph)) or paragraph.startswith("**CPython implementation detail:**")
        introduces_code = paragraph.endswith(":") and not admonition and not code
        out.append(None if code or _ADMONITION.match(paragraph) else paragraph)
    return out


def clean_paragraph(paragraph: str) -> str:
    """Strip inline reST left in pydoc's text: *emphasis*, **strong**, footnote marks [1], a leading list marker."""
    paragraph = _EMPHASIS.sub(r"\2", paragraph)
    paragraph = _FOOTNOTE.sub("", paragraph)
    paragraph = _LIST_MARKER.sub("", paragraph)
    return normalize(paragraph)


def split_sentences(paragraph: str) -> list[str]:
    """Split after . ! ? followed by a capital (or a quote or bracket and a capital), not after e.g., i.e., cf., vs."""
    sentences: list[str] = []
    current = ""
    for piece in _SENTENCE_END.split(paragraph):
        current = f"{current} {piece}" if current else piece
        if not current.endswith(_ABBREVIATIONS):
            sentences.append(current)
            current = ""
    if current:
        sentences.append(current)
    return sentences


def _word_fraction(tokens: list[str]) -> float:
    return sum(bool(_WORD.fullmatch(token)) for token in tokens) / len(tokens)


def is_corpus_sentence(sentence: str) -> bool:
    """Loose: prose worth pretraining on (at least three tokens, half of them words)."""
    tokens = sentence.split()
    return len(tokens) >= 3 and _word_fraction(tokens) >= 0.5


@functools.lru_cache(maxsize=65536)
def is_example_sentence(sentence: str) -> bool:
    """Strict: a complete English sentence for a GLUE-style example (5-50 tokens, capital or quote to full stop, mostly
    words, balanced brackets and quotes)."""
    tokens = sentence.split()
    starts = sentence[0].isupper() or (sentence[0] in "\"“(" and sentence[1:2].isalpha())  # '"x is y" is true if ...'
    if not MIN_WORDS <= len(tokens) <= MAX_WORDS or not starts or sentence[-1] not in ".?!":
        return False
    balanced = sentence.count("(") == sentence.count(")") and sentence.count('"') % 2 == 0  # not cut inside a parenthesis
    return balanced and _word_fraction(tokens) >= MIN_WORD_FRACTION and len(_UNIT.findall(sentence)) >= MIN_SHUFFLE_UNITS


def load_topics(topics: dict[str, str] | None = None) -> list[Topic]:
    """The cleaned topics in name order. A sentence already seen in an earlier topic is dropped (and breaks adjacency)."""
    if topics is None:
        from pydoc_data.topics import topics
    seen: set[str] = set()
    result: list[Topic] = []
    for name in sorted(topics):
        topic = Topic(name)
        position = 0
        for block in prose_blocks(topics[name]):
            # Positions: +1 per block and per sentence, +1 more per dropped block or sentence, so that two kept
            # sentences are at most 2 apart exactly when nothing lies between them (a paragraph break at most).
            position += 1
            if block is None:
                position += 1
                continue
            paragraph: list[tuple[str, int]] = []
            for sentence in split_sentences(clean_paragraph(block)):
                position += 1
                if sentence in seen or not is_corpus_sentence(sentence):
                    position += 1
                    continue
                seen.add(sentence)
                paragraph.append((sentence, position))
            if paragraph:
                topic.paragraphs.append(paragraph)
        if topic.paragraphs:
            result.append(topic)
    return result


def source_fingerprint(topics: dict[str, str] | None = None) -> str:
    """sha256 of the source text (it changes with the Python version, and so do the data)."""
    if topics is None:
        from pydoc_data.topics import topics
    return hashlib.sha256(json.dumps(topics, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# The split and the tasks
# ---------------------------------------------------------------------------------------------


def example_sentences(topic: Topic) -> list[str]:
    return [s for s in topic.sentences() if is_example_sentence(s)]


def consecutive_pairs(topic: Topic) -> list[tuple[str, str]]:
    """Pairs of example sentences that follow each other directly in the topic (also across a paragraph break,
    but not across a heading, a code block or a dropped sentence)."""
    flat = [(s, p) for paragraph in topic.paragraphs for s, p in paragraph]
    pairs = []
    for (first, p1), (second, p2) in zip(flat, flat[1:], strict=False):
        if p2 - p1 <= 2 and is_example_sentence(first) and is_example_sentence(second):
            pairs.append((first, second))
    return pairs


def split_topics(topics: list[Topic], dev_share: float, seed: int) -> tuple[list[Topic], list[Topic]]:
    """Seeded split by topic: topics in a random order join dev while it holds fewer than ``dev_share`` of the
    example sentences (a topic that would overshoot by more than 15% is left to train). Each side keeps name order."""
    counts = {t.name: len(example_sentences(t)) for t in topics}
    target = dev_share * sum(counts.values())
    order = sorted(topics, key=lambda t: t.name)
    random.Random(f"{seed}:split").shuffle(order)
    dev: set[str] = set()
    dev_count = 0
    for topic in order:
        if dev_count >= target:
            break
        if dev_count + counts[topic.name] <= 1.15 * target:
            dev.add(topic.name)
            dev_count += counts[topic.name]
    return [t for t in topics if t.name not in dev], [t for t in topics if t.name in dev]


def _mid_sentence_case(topics: list[Topic]) -> Counter:
    """How often each token occurs after the first position of a sentence (to tell "The" from "Python")."""
    counts: Counter = Counter()
    for topic in topics:
        for sentence in topic.sentences():
            counts.update(sentence.split()[1:])
    return counts


def shuffle_sentence(sentence: str, rng: random.Random, mid_counts: Counter) -> str | None:
    """The sentence's units (words; quoted or bracketed spans whole) in a random order that differs from the original,
    with the first word's case and the final punctuation mark moved to where they belong; None if it cannot differ."""
    final = sentence[-1]
    units = _UNIT.findall(sentence[:-1])
    first = units[0]
    lower = first[:1].lower() + first[1:]
    if first[:1].isupper() and first[1:].islower() and mid_counts[lower] > mid_counts[first]:
        units[0] = lower  # "The" -> "the", but "Python" stays
    for _ in range(50):  # a different order, starting with a word or a quoted or bracketed span (as real sentences do)
        order = units[:]
        rng.shuffle(order)
        if order != units and (order[0][:1].isalpha() or order[0][:1] in "\"“("):
            break
    else:
        return None
    order[0] = order[0][:1].upper() + order[0][1:]
    order[-1] = order[-1].rstrip(",;:")
    return " ".join(order) + final


def _take(items: list, wanted: int, rng: random.Random) -> list:
    """A seeded sample of ``wanted`` items, in their original order (all of them when there are fewer)."""
    if len(items) <= wanted:
        return list(items)
    chosen = sorted(rng.sample(range(len(items)), wanted))
    return [items[i] for i in chosen]


def build_cola(topics: list[Topic], size: int, rng: random.Random, mid_counts: Counter) -> list[tuple[str, int, str, str]]:
    """CoLA rows (source, label, original_label, sentence): each chosen sentence once as is (1), once shuffled (0)."""
    candidates = []
    for topic in topics:
        for sentence in example_sentences(topic):
            shuffled = shuffle_sentence(sentence, rng, mid_counts)
            if shuffled is not None and shuffled != sentence:
                candidates.append((topic.name, sentence, shuffled))
    rows = []
    for name, sentence, shuffled in _take(candidates, size // 2, rng):
        rows += [(name, 1, "", sentence), (name, 0, "*", shuffled)]
    rng.shuffle(rows)
    return rows


def build_rte(topics: list[Topic], size: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """RTE rows (sentence1, sentence2, label): each chosen pair once in order (entailment), once swapped."""
    candidates = [pair for topic in topics for pair in consecutive_pairs(topic)]
    rows = []
    for first, second in _take(candidates, size // 2, rng):
        rows += [(first, second, "entailment"), (second, first, "not_entailment")]
    rng.shuffle(rows)
    return rows


def available(topics: list[Topic]) -> dict[str, int]:
    """The most examples each task can have from these topics."""
    return {"cola": 2 * sum(len(example_sentences(t)) for t in topics),
            "rte": 2 * sum(len(consecutive_pairs(t)) for t in topics)}


def _check_field(text: str) -> str:
    if not text or text != normalize(text):
        raise AssertionError(f"not a TSV-safe field: {text!r}")
    return text


def write_cola(path: Path, rows: list[tuple[str, int, str, str]]) -> None:
    lines = [f"{source}\t{label}\t{original}\t{_check_field(sentence)}\n" for source, label, original, sentence in rows]
    path.write_text("".join(lines), encoding="utf-8", newline="\n")


def write_rte(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["index\tsentence1\tsentence2\tlabel\n"]
    lines += [f"{i}\t{_check_field(a)}\t{_check_field(b)}\t{label}\n" for i, (a, b, label) in enumerate(rows)]
    path.write_text("".join(lines), encoding="utf-8", newline="\n")


# ---------------------------------------------------------------------------------------------
# The whole build, its manifest and DATA.md
# ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commands(out_dir: Path) -> dict[str, str]:
    """The commands that use the data, with this output folder filled in (paths as given, POSIX style)."""
    out = out_dir.as_posix()
    tiny = '{"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}'
    recipe = "--learning_rate 3e-4 --num_train_epochs 5 --warmup_ratio 0.1 --per_device_train_batch_size 32"  # small-model CPU recipe
    return {
        "tokenizer": f"python flexibert/save_roberta_tokenizer.py --train_files {out}/corpus/train.txt --vocab_size 4000 "
                     f"--output_dir {out}/tokenizer",
        "pretrain_dataset": f"python flexibert/prepare_pretrain_dataset.py --text_files {out}/corpus/train.txt "
                            f"--tokenizer {out}/tokenizer --max_seq_length 128 --output_dir {out}/pretrain_dataset",
        "pretrain": f"python flexibert/pretrain_flexibert.py --model_dict '{tiny}' --tokenizer {out}/tokenizer "
                    f"--dataset_dir {out}/pretrain_dataset --max_seq_length 128 --max_steps 300 --warmup_steps 30 "
                    f"--learning_rate 1e-3 --per_device_train_batch_size 16 --gradient_accumulation_steps 1 "
                    f"--output_dir {out}/models/bert_tiny",
        "finetune": f"python flexibert/finetune_flexibert.py --model_name_or_path {out}/models/bert_tiny --task_name cola "
                    f"--glue_dir {out}/glue {recipe} --output_dir {out}/runs/cola",
        "glue_score": f"python flexibert/glue_score.py --model_name_or_path {out}/models/bert_tiny --glue_dir {out}/glue "
                      f"--tasks cola rte {recipe} --output_dir {out}/runs/glue",
        "tokenize_glue": f"python flexibert/tokenize_glue_datasets.py --tokenizer {out}/tokenizer --glue_dir {out}/glue "
                         f"--tasks cola rte --output_dir {out}/glue_tokenized",
    }


def data_md(summary: dict) -> str:
    s, c, t = summary["settings"], summary["corpus"], summary["tasks"]
    cmd = summary["commands"]
    notes = "".join(f"- {note}\n" for note in summary["notes"]) or "- none (every requested size was available)\n"
    return f"""# Offline demo data (not GLUE)

Built by `python flexibert/prepare_demo_data.py` (generator version {summary["generator_version"]}) from the
documentation topics that ship with Python ({SOURCE}, Python {summary["python_version"]},
{summary["topics"]["train"] + summary["topics"]["dev"]} topics), with --train_size {s["train_size"]} --dev_size {s["dev_size"]}
--seed {s["seed"]}. The text is real English (the language reference and the built-in types' documentation,
with code blocks, tables and markup removed); **the labels are synthetic**. These are not the GLUE tasks: use
them to exercise the pipeline offline. Scores are not comparable with GLUE scores.

Topics are split between train ({summary["topics"]["train"]} topics) and dev ({summary["topics"]["dev"]} topics);
no sentence is in both, and a sentence repeated across topics is kept once.

## Pretraining corpus (`corpus/`)

| file | lines (paragraphs) | words |
|---|---|---|
| `corpus/train.txt` | {c["train"]["lines"]:,} | {c["train"]["words"]:,} |
| `corpus/validation.txt` | {c["validation"]["lines"]:,} | {c["validation"]["words"]:,} |

`validation.txt` holds the dev topics: pretrain on `train.txt` only, so that the dev sentences of the tasks
below stay unseen (prepare_pretrain_dataset.py makes its own validation split from the rows it is given).

## Tasks (`glue/`, the GLUE layout read by `--glue_dir`)

| task | folder | what it asks | label 1 / 0 | train | dev |
|---|---|---|---|---|---|
| `cola` | `glue/CoLA` | is this a real sentence? (the other: its words shuffled) | acceptable / unacceptable \
| {t["cola"]["train"]:,} | {t["cola"]["dev"]:,} |
| `rte` | `glue/RTE` | are these two consecutive sentences in their original order? | entailment / not_entailment \
| {t["rte"]["train"]:,} | {t["rte"]["dev"]:,} |

Both label values are exactly balanced in every file: every chosen sentence is in CoLA twice (as is, and
shuffled: quoted and bracketed spans move whole, the first word's case and the final full stop are restored, and
the shuffle always differs from the original), and every chosen pair of consecutive sentences is in RTE twice
(in order, and swapped). A bag of words therefore cannot tell the labels apart: word order has to be learned.
The CoLA files have no header (source topic, label, `*` for unacceptable, sentence); RTE files have the header
`index, sentence1, sentence2, label`. Fields contain no tabs or newlines.

Notes on sizes:
{notes}
## Commands

Tokenizer (byte-level BPE, offline) and packed pretraining data:

    {cmd["tokenizer"]}
    {cmd["pretrain_dataset"]}

A tiny model pretrained on CPU (a few minutes):

    {cmd["pretrain"]}

Fine-tuning on one task, or on both with the GLUE-style score (the mean over `--tasks`):

    {cmd["finetune"]}
    {cmd["glue_score"]}

What to expect (one CPU run of the commands above on the default data, generator version 1): the pretrained
model's validation MLM loss is about 6.35 (a small corpus: about 40,000 tokens); fine-tuned, it reaches a CoLA dev
MCC of about 0.43, while on the order task it stays at chance (accuracy 0.50). The order task is hard by design:
a linear model on unigrams gets exactly 0.50 on both tasks, on word bigrams 0.80-0.88 on CoLA (seeds 0-7).

Or tokenise the tasks once (then fine-tune with `--dataset_dir {summary["out_dir"]}/glue_tokenized`):

    {cmd["tokenize_glue"]}
"""


def format_summary(summary: dict) -> str:
    c, t = summary["corpus"], summary["tasks"]
    state = "already there (same settings), kept" if summary.get("skipped") else f"built in {summary['build_seconds']:.1f}s"
    lines = [
        f"demo data in {summary['out_dir']}: {state}",
        f"  corpus/train.txt       {c['train']['lines']:,} paragraphs, {c['train']['words']:,} words",
        f"  corpus/validation.txt  {c['validation']['lines']:,} paragraphs, {c['validation']['words']:,} words",
        *(f"  glue/{info['folder']}/{{train,dev}}.tsv  {name}: {info['train']:,} train + {info['dev']:,} dev examples (balanced labels)"
          for name, info in t.items()),
        *(f"  note: {note}" for note in summary["notes"]),
        "  synthetic labels on Python's own documentation: NOT GLUE; scores are not comparable with GLUE",
        f"  use: --glue_dir {summary['glue_dir']} --tasks {' '.join(t)}; "
        f"--text_files / --train_files {summary['corpus']['train']['path']}",
        f"  commands: {summary['out_dir']}/DATA.md",
    ]
    return "\n".join(lines)


def build(work_dir: Path, out_dir: Path, train_size: int, dev_size: int, seed: int, topics: dict[str, str] | None = None) -> dict:
    """Write corpus/, glue/ and DATA.md into ``work_dir`` and return the summary, whose paths name ``out_dir``
    (where the caller moves them)."""
    start = time.perf_counter()
    cleaned = load_topics(topics)
    dev_share = min(0.5, max(0.1, dev_size / (train_size + dev_size)))
    train_topics, dev_topics = split_topics(cleaned, dev_share, seed)
    mid_counts = _mid_sentence_case(cleaned)
    notes: list[str] = []
    corpus = {}
    for split, part in (("train", train_topics), ("validation", dev_topics)):
        path = work_dir / "corpus" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(s for s, _ in paragraph) for topic in part for paragraph in topic.paragraphs]
        path.write_text("".join(f"{_check_field(line)}\n" for line in lines), encoding="utf-8", newline="\n")
        corpus[split] = {"path": str(out_dir / "corpus" / f"{split}.txt"), "lines": len(lines),
                         "words": sum(len(line.split()) for line in lines)}

    tasks = {}
    most_examples = {"train": available(train_topics), "dev": available(dev_topics)}
    for name, folder in (("cola", "CoLA"), ("rte", "RTE")):
        (work_dir / "glue" / folder).mkdir(parents=True, exist_ok=True)
        info: dict = {"folder": folder}
        for split, part, wanted in (("train", train_topics, train_size), ("dev", dev_topics, dev_size)):
            rng = random.Random(f"{seed}:{name}:{split}")
            most = most_examples[split][name]
            if wanted // 2 * 2 > most:
                notes.append(f"{name} {split}: {wanted:,} examples asked for, only {most:,} available from {SOURCE} "
                             f"(Python {sys.version_info.major}.{sys.version_info.minor}); wrote {most:,}")
            path = work_dir / "glue" / folder / f"{split}.tsv"
            if name == "cola":
                rows = build_cola(part, wanted, rng, mid_counts)
                write_cola(path, rows)
            else:
                rows = build_rte(part, wanted, rng)
                write_rte(path, rows)
            if not rows:
                raise DemoDataError(f"no {name} {split} examples could be made (the {split} topics have no usable sentences)")
            info[split] = len(rows)
            info[f"{split}_file"] = str(out_dir / "glue" / folder / f"{split}.tsv")
        tasks[name] = info

    summary = {
        "out_dir": str(out_dir), "glue_dir": str(out_dir / "glue"), "corpus": corpus, "tasks": tasks,
        "task_names": list(tasks), "notes": notes,
        "topics": {"train": len(train_topics), "dev": len(dev_topics),
                   "dev_names": [t.name for t in dev_topics]},
        "settings": {"train_size": train_size, "dev_size": dev_size, "seed": seed},
        "generator_version": GENERATOR_VERSION, "python_version": sys.version.split()[0],
        "source": SOURCE, "source_sha256": source_fingerprint(topics),
        "commands": commands(out_dir), "data_md": str(out_dir / "DATA.md"),
    }
    (work_dir / "DATA.md").write_text(data_md(summary), encoding="utf-8", newline="\n")
    summary["build_seconds"] = round(time.perf_counter() - start, 3)
    return summary


def _read_manifest(out_dir: Path) -> dict | None:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and {"key", "files", "summary"} <= set(manifest) else None


def _changed_files(out_dir: Path, manifest: dict) -> list[str]:
    """The files of a build that are missing or differ from what the build wrote."""
    return [relative for relative, digest in manifest["files"].items()
            if not (out_dir / relative).is_file() or _sha256(out_dir / relative) != digest]


def prepare_demo_data(out_dir: str | Path, train_size: int = 2000, dev_size: int = 500, seed: int = 1,
                      overwrite: bool = False, topics: dict[str, str] | None = None) -> dict:
    """Build the offline demo data in ``out_dir`` (see the module docstring) and return a summary.

    The summary (JSON-serialisable) has ``out_dir``, ``glue_dir``, ``task_names`` (``["cola", "rte"]``), ``tasks``
    (per task: ``folder``, ``train``/``dev`` example counts and files), ``corpus`` (``train``/``validation``: ``path``,
    ``lines``, ``words``), ``notes`` (sizes capped by the available text), ``commands`` (the repo's scripts on these
    data), ``data_md`` and ``skipped`` (True when an identical earlier build was kept). Re-running with the same
    settings does nothing; other settings over an earlier build raise ``DemoDataError`` unless ``overwrite``.
    ``topics`` replaces pydoc's topics (for tests).
    """
    out_dir = Path(out_dir)
    if train_size < 2 or dev_size < 2:
        raise DemoDataError(f"--train_size and --dev_size must be at least 2 (got {train_size} and {dev_size})")
    key = {"train_size": train_size, "dev_size": dev_size, "seed": seed, "generator_version": GENERATOR_VERSION,
           "source_sha256": source_fingerprint(topics)}
    if not overwrite:
        manifest = _read_manifest(out_dir)
        existing = [name for name in (*OUTPUTS, MANIFEST) if (out_dir / name).exists()]
        if manifest is not None:
            changed = _changed_files(out_dir, manifest)
            if manifest["key"] == key and not changed:
                return {**manifest["summary"], "skipped": True}
            if manifest["key"] != key:
                before = ", ".join(f"{k} {v}" for k, v in manifest["key"].items() if key.get(k) != v)
                raise DemoDataError(f"{out_dir} holds demo data built with other settings ({before}); pass --overwrite to "
                                    "rebuild it, or choose another --output_dir")
            raise DemoDataError(f"{out_dir}: {', '.join(changed)} changed or missing since the build; pass --overwrite "
                                "to rebuild, or choose another --output_dir")
        if existing:
            raise DemoDataError(f"{out_dir} already holds {', '.join(existing)} but no valid {MANIFEST} (not written by "
                                "this script, or an interrupted build); pass --overwrite to replace them, or choose another "
                                "--output_dir")

    # Build beside the target and move the outputs in, the manifest last: a folder with a manifest is complete.
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = new_temporary_folder(out_dir, prefix=".staging-")  # the umask's mode, like every folder it holds
    try:
        summary = build(staging, out_dir, train_size, dev_size, seed, topics)
        (out_dir / MANIFEST).unlink(missing_ok=True)
        for name in OUTPUTS:
            target = out_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            (staging / name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p.relative_to(out_dir).as_posix() for name in OUTPUTS for p in [out_dir / name, *(out_dir / name).rglob("*")]
                   if p.is_file())
    write_json_atomic(out_dir / MANIFEST, {"key": key, "files": {f: _sha256(out_dir / f) for f in files}, "summary": summary})
    return {**summary, "skipped": False}


