"""The offline demo data (flexibert/prepare_demo_data.py): built from Python's own pydoc topics, loaded through the GLUE path.

Everything runs in-process (the script's ``main`` and its ``python -m`` / ``python FILE`` forms via runpy); the
tokenizer and pretraining data preparation run on the demo corpus at a tiny size, as in tests/test_pretraining.py.
"""

from __future__ import annotations

import json
import re
import runpy
import sys
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from flexibert import prepare_demo_data as demo
from flexibert import prepare_pretrain_dataset, save_roberta_tokenizer
from flexibert.data.glue import TASKS, load_glue, read_glue_tsv, tokenize_glue
from flexibert.data.tokenization import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TRAIN, DEV = 2000, 500  # the defaults


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "data"
    return out, demo.prepare_demo_data(out, TRAIN, DEV, seed=1)


def glue(out: Path, task: str) -> dict[str, dict[str, list]]:
    folder = out / "glue" / TASKS[task].folder
    return {split: read_glue_tsv(task, folder / f"{split}.tsv") for split in ("train", "dev")}


def words(sentence: str) -> tuple[str, ...]:
    return tuple(sorted(re.findall(r"\w+", sentence.lower())))


def test_files_have_the_glue_layouts(built):
    out, summary = built
    assert summary["task_names"] == ["cola", "rte"] and summary["glue_dir"] == str(out / "glue") and not summary["skipped"]
    assert summary["notes"] == [], "the default sizes fit the text"
    for split in ("train", "dev"):
        cola = (out / "glue" / "CoLA" / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
        assert cola[-1] == "" and len(cola) - 1 == summary["tasks"]["cola"][split] == (TRAIN if split == "train" else DEV)
        for line in cola[:-1]:
            source, label, original, sentence = line.split("\t")  # headerless, exactly 4 fields
            assert label in ("0", "1") and original == ("*" if label == "0" else "") and source.isascii() and source
            assert sentence == " ".join(sentence.split()) and sentence[-1] in ".?!" and len(sentence.split()) >= 5
        rte = (out / "glue" / "RTE" / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
        assert rte[0] == "index\tsentence1\tsentence2\tlabel" and rte[-1] == ""
        for i, line in enumerate(rte[1:-1]):
            index, first, second, label = line.split("\t")
            assert index == str(i) and label in ("entailment", "not_entailment")
            assert first == " ".join(first.split()) and second == " ".join(second.split()) and first != second
    assert any('"' in line for line in rte), "quotes in the text are kept (GLUE TSVs are read without quoting)"
    for split in ("train", "validation"):
        lines = (out / "corpus" / f"{split}.txt").read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and all(line.strip() == line and line for line in lines[:-1])
        assert summary["corpus"][split]["lines"] == len(lines) - 1
    assert summary["corpus"]["train"]["words"] > 20_000 and summary["corpus"]["validation"]["words"] > 3_000
    text = (out / "DATA.md").read_text(encoding="utf-8")
    assert "NOT GLUE" in text.upper() and "not comparable" in text and f"--glue_dir {out.as_posix()}/glue" in text
    assert f"--text_files {out.as_posix()}/corpus/train.txt" in text and "--tasks cola rte" in text


def test_load_glue_reads_them_balanced(built):
    out, _ = built
    for task in ("cola", "rte"):
        data = load_glue(task, out / "glue")
        assert set(data) == {"train", "validation"}
        for split, size in (("train", TRAIN), ("validation", DEV)):
            assert data[split].features == TASKS[task].features() and len(data[split]) == size
            assert Counter(data[split]["label"]) == {0: size // 2, 1: size // 2}
            assert data[split]["idx"] == list(range(size))


def test_every_sentence_appears_real_and_shuffled(built):
    out, _ = built
    for split, rows in glue(out, "cola").items():
        real = [s for s, y in zip(rows["sentence"], rows["label"], strict=True) if y == 1]
        shuffled = [s for s, y in zip(rows["sentence"], rows["label"], strict=True) if y == 0]
        assert Counter(map(words, real)) == Counter(map(words, shuffled)), "the same words, once real and once shuffled"
        assert not set(real) & set(shuffled), "a shuffled sentence differs from its original (and from every real one)"
        assert len(set(real)) == len(real) and len(set(shuffled)) == len(shuffled)
        assert all(s[0].isupper() or s[0] in '"“(' for s in shuffled), split
        assert all(s.count('"') % 2 == 0 and s.count("(") == s.count(")") for s in real + shuffled), "quotes, brackets move whole"


def test_rte_pairs_are_consecutive_sentences_both_ways(built):
    out, _ = built
    text = " ".join((out / "corpus" / f"{split}.txt").read_text(encoding="utf-8").replace("\n", " ") for split in ("train", "validation"))
    for split, rows in glue(out, "rte").items():
        in_order = {(a, b) for a, b, y in zip(rows["sentence1"], rows["sentence2"], rows["label"], strict=True) if y == 0}
        swapped = {(b, a) for a, b, y in zip(rows["sentence1"], rows["sentence2"], rows["label"], strict=True) if y == 1}
        assert in_order == swapped and len(in_order) == len(rows["label"]) // 2, split
        assert all(f"{a} {b}" in text for a, b in in_order), "entailment = the order of the documentation"


def test_train_and_dev_share_no_sentence(built):
    out, summary = built
    cola, rte = glue(out, "cola"), glue(out, "rte")
    train_bags = {words(s) for s in cola["train"]["sentence"]}
    assert not train_bags & {words(s) for s in cola["dev"]["sentence"]}
    rte_train = set(rte["train"]["sentence1"]) | set(rte["train"]["sentence2"])
    rte_dev = set(rte["dev"]["sentence1"]) | set(rte["dev"]["sentence2"])
    assert not rte_train & rte_dev
    real = {split: {s for s, y in zip(cola[split]["sentence"], cola[split]["label"], strict=True) if y == 1} for split in cola}
    assert not (real["train"] | rte_train) & (real["dev"] | rte_dev)
    # The dev sentences are not in the pretraining text either (only in corpus/validation.txt).
    corpus_train = (out / "corpus" / "train.txt").read_text(encoding="utf-8")
    corpus_validation = (out / "corpus" / "validation.txt").read_text(encoding="utf-8")
    assert not any(s in corpus_train for s in real["dev"] | rte_dev)
    assert all(s in corpus_validation for s in real["dev"] | rte_dev)
    assert len(summary["topics"]["dev_names"]) == summary["topics"]["dev"] > 0


def test_deterministic_and_idempotent(built, tmp_path, capsys):
    out, summary = built
    demo.prepare_demo_data(tmp_path / "again", TRAIN, DEV, seed=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name not in ("DATA.md", "manifest.json"))
    assert len(files) == 6
    assert all((out / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files), "two runs, identical bytes"
    assert (out / "DATA.md").read_text() == (tmp_path / "again" / "DATA.md").read_text().replace(
        (tmp_path / "again").as_posix(), out.as_posix())
    other = demo.prepare_demo_data(tmp_path / "seed2", TRAIN, DEV, seed=2)
    assert (tmp_path / "seed2" / "glue" / "CoLA" / "train.tsv").read_bytes() != (out / "glue" / "CoLA" / "train.tsv").read_bytes()
    assert other["tasks"]["cola"]["train"] == TRAIN

    # Same settings: nothing is rewritten; other settings: refused unless overwrite.
    stamps = {f: (out / f).stat().st_mtime_ns for f in files}
    kept = demo.prepare_demo_data(out, TRAIN, DEV, seed=1)
    assert kept["skipped"] and {**kept, "skipped": False} == summary
    assert stamps == {f: (out / f).stat().st_mtime_ns for f in files}
    with pytest.raises(demo.DemoDataError, match="other settings \\(train_size 2000, dev_size 500\\); pass --overwrite"):
        demo.prepare_demo_data(tmp_path / "again", 40, 20, seed=1)
    small = demo.prepare_demo_data(tmp_path / "again", 40, 20, seed=1, overwrite=True)
    assert not small["skipped"] and len(load_glue("rte", tmp_path / "again" / "glue")["train"]) == 40
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["key"]["train_size"] == 40 and not list((tmp_path / "again").glob(".staging-*"))

    # A changed file is rebuilt; a folder with outputs but no manifest is refused.
    (tmp_path / "again" / "glue" / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(demo.DemoDataError, match="glue/RTE/dev.tsv changed or missing"):
        demo.prepare_demo_data(tmp_path / "again", 40, 20, seed=1)
    assert not demo.prepare_demo_data(tmp_path / "again", 40, 20, seed=1, overwrite=True)["skipped"]
    assert demo.prepare_demo_data(tmp_path / "again", 40, 20, seed=1)["skipped"]
    (tmp_path / "foreign" / "glue").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no valid manifest.json"):
        demo.main(["--output_dir", str(tmp_path / "foreign")])
    assert (tmp_path / "foreign" / "glue").is_dir()


def test_sizes_are_capped_by_the_text(tmp_path):
    summary = demo.prepare_demo_data(tmp_path / "big", 100_001, 99, seed=1)
    cola, rte = summary["tasks"]["cola"], summary["tasks"]["rte"]
    assert 2_000 < cola["train"] < 100_000 and 1_000 < rte["train"] < cola["train"] and cola["dev"] == rte["dev"] == 98
    assert len(summary["notes"]) == 2 and all("only" in note for note in summary["notes"])
    assert Counter(load_glue("rte", tmp_path / "big" / "glue")["train"]["label"]) == {0: rte["train"] // 2, 1: rte["train"] // 2}
    with pytest.raises(demo.DemoDataError, match="at least 2"):
        demo.prepare_demo_data(tmp_path / "none", 1, 10, seed=1)


def test_order_is_not_bag_of_words_learnable_but_acceptability_is_from_bigrams(built):
    """A bag of words sees each pair's two versions alike (dev accuracy exactly 1/2); word bigrams see shuffling."""
    out, _ = built

    def dev_accuracy(task: str, ngrams: tuple[int, int]) -> float:
        data = glue(out, task)
        columns = TASKS[task].text_columns
        texts = {split: [" ".join(parts) for parts in zip(*(rows[c] for c in columns), strict=True)] for split, rows in data.items()}
        model = make_pipeline(CountVectorizer(ngram_range=ngrams), LogisticRegression(solver="liblinear"))
        model.fit(texts["train"], data["train"]["label"])
        return model.score(texts["dev"], data["dev"]["label"])

    assert dev_accuracy("rte", (1, 1)) == 0.5
    assert dev_accuracy("cola", (1, 1)) == 0.5
    assert dev_accuracy("cola", (2, 2)) > 0.7  # 0.80-0.88 over seeds 0-7


def test_corpus_trains_a_tokenizer_and_packs_a_pretraining_dataset(built, tmp_path):
    out, _ = built
    corpus = out / "corpus" / "train.txt"
    save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "1000", "--output_dir", str(tmp_path / "tok")])
    prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--max_seq_length", "64",
                                   "--cache_dir", str(tmp_path / "hf_cache"), "--output_dir", str(tmp_path / "dataset")])
    tokenizer = load_tokenizer(tmp_path / "tok")
    data = load_from_disk(str(tmp_path / "dataset"))
    assert len(tokenizer) == 1000 and len(data["train"]) > 500 and len(data["validation"]) > 10
    assert {len(row) for row in data["train"]["input_ids"][:100]} == {64}
    first_line = corpus.read_text(encoding="utf-8").split("\n")[0]
    assert tokenizer.decode(data["train"][0]["input_ids"]).startswith("<s>" + first_line[:40])

    # The tasks tokenise as single sentences and as pairs (<s> A </s></s> B </s>) with this tokenizer.
    for task, separators in (("cola", 1), ("rte", 3)):
        encoded = tokenize_glue(load_glue(task, out / "glue"), task, tokenizer, max_seq_length=128)
        ids = encoded["validation"][0]["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.eos_token_id) == separators


def test_command_line(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "python flexibert/prepare_demo_data.py --output_dir demo_data" in help_text and "(default: 2000)" in help_text
    assert "pydoc_data.topics" in help_text and "NOT GLUE" in help_text

    # As a module and as a file, run the way `python -m` and `python FILE` run them (in-process: a new interpreter
    # would spend most of this test importing torch).
    argv = ["prepare_demo_data", "--output_dir", str(tmp_path / "m"), "--train_size", "40", "--dev_size", "20"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, "flexibert.prepare_demo_data")
    runpy.run_module("flexibert.prepare_demo_data", run_name="__main__")
    output = capsys.readouterr().out
    assert "glue/CoLA/{train,dev}.tsv  cola: 40 train + 20 dev" in output and "NOT GLUE" in output
    runpy.run_path(str(ROOT / "flexibert" / "prepare_demo_data.py"), run_name="__main__")
    assert "already there (same settings), kept" in capsys.readouterr().out
