"""GLUE data, metrics and fine-tuning, on the real GLUE TSVs in ../shared/data (skipped when absent) and small TSVs made here."""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, finetune_flexibert, glue_score, load_all_glue_datasets, tokenize_glue_datasets
from flexibert.data.glue import GLUE_TASKS, GlueError, get_task, load_glue, read_glue_tsv
from flexibert.data.glue_metrics import DEFAULT_TASKS, compute_metrics, task_score
from flexibert.data.glue_metrics import glue_score as glue_score_of
from flexibert.data.tokenization import train_bpe_tokenizer
from flexibert.utils.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(
    not (GLUE_DIR / "SST-2" / "train.tsv").is_file(),
    reason=f"real GLUE TSVs not found in {GLUE_DIR} (the shared data folder beside the checkout; see DESIGN.md 'Data for tests')",
)
TINY_MODEL = {"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[128], [128]], "p": ["sdp", "sdp"]}
QUICK = ["--max_steps", "3", "--per_device_train_batch_size", "8", "--max_train_samples", "48", "--max_eval_samples", "40",
         "--max_seq_length", "64", "--logging_steps", "1", "--learning_rate", "1e-3"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train several times faster on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_tsv(path: Path, rows: list[list[str]], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Real GLUE files
# ---------------------------------------------------------------------------------------------

OFFICIAL = {  # rows and label counts per split, from the GLUE files (see ../shared/data/README.md)
    "sst2": {"train": (67349, {0: 29780, 1: 37569}), "validation": (872, {0: 428, 1: 444})},
    "mrpc": {"train": (3668, {0: 1194, 1: 2474}), "validation": (408, {0: 129, 1: 279})},
    "stsb": {"train": (5749, None), "validation": (1500, None)},
    "rte": {"train": (2490, {0: 1249, 1: 1241}), "validation": (277, {0: 146, 1: 131})},
}


@needs_glue
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_real_glue_files_have_the_official_rows_and_labels(name):
    task = get_task(name)
    data = load_glue(task, GLUE_DIR)
    assert list(data) == ["train", "validation"]
    for split, (rows, label_counts) in OFFICIAL[name].items():
        ds = data[split]
        assert len(ds) == rows
        assert ds.column_names == [*task.text_columns, "label", "idx"]
        assert ds["idx"] == list(range(rows))
        if label_counts is None:
            scores = np.array(ds["label"])
            assert scores.dtype.kind == "f" and scores.min() == 0.0 and scores.max() == 5.0
        else:
            assert dict(Counter(ds["label"])) == label_counts
            assert ds.features["label"].names == list(task.label_names)


@needs_glue
def test_real_files_keep_quotes_bom_free_headers_and_exact_text():
    mrpc = load_glue("mrpc", GLUE_DIR)["validation"][0]  # starts with a BOM; its second sentence opens a quote it never closes
    assert mrpc == {"sentence1": "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
                    "sentence2": '" The foodservice pie business does not fit our long-term growth strategy .', "label": 1, "idx": 0}
    stsb = load_glue("stsb", GLUE_DIR)["train"][1]
    assert stsb["sentence1"] == "A man is playing a large flute." and stsb["label"] == pytest.approx(3.8)
    rte = load_glue("RTE", GLUE_DIR)["train"][0]
    assert rte["sentence2"] == "Weapons of Mass Destruction Found in Iraq." and rte["label"] == 1  # not_entailment


@needs_glue
def test_load_all_glue_datasets_prints_row_counts(capsys):
    counts = load_all_glue_datasets.main(["--glue_dir", str(GLUE_DIR), "--tasks", "mrpc", "STS-B"])
    assert counts == {"mrpc": {"train": 3668, "validation": 408}, "stsb": {"train": 5749, "validation": 1500}}
    out = capsys.readouterr().out
    assert "stsb   validation                1,500" in out
    assert out.strip().splitlines()[-1] == f"loaded 2 GLUE task(s), 11,325 labelled rows, from {GLUE_DIR}"


@needs_glue
def test_scripts_run_as_files_and_as_modules(tmp_path):
    as_file = subprocess.run([sys.executable, "flexibert/load_all_glue_datasets.py", "--glue_dir", str(GLUE_DIR), "--tasks", "rte"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert as_file.returncode == 0, as_file.stderr
    assert "loaded 1 GLUE task(s), 2,767 labelled rows" in as_file.stdout
    missing = subprocess.run([sys.executable, "-m", "flexibert.load_all_glue_datasets", "--glue_dir", str(tmp_path), "--tasks", "rte"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1
    assert f"error: {tmp_path / 'RTE' / 'train.tsv'}: file not found" in missing.stderr and "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------
# Layouts and errors, on small TSVs written here
# ---------------------------------------------------------------------------------------------


def test_cola_has_no_header(tmp_path):
    rows = [["gj04", "1", "", "Our friends won't buy this analysis."], ["gj04", "0", "*", "They drank the pub."]]
    write_tsv(tmp_path / "CoLA" / "train.tsv", rows)
    write_tsv(tmp_path / "CoLA" / "dev.tsv", rows[1:])
    data = load_glue("cola", tmp_path)
    assert data["train"].to_dict() == {"sentence": ["Our friends won't buy this analysis.", "They drank the pub."],
                                       "label": [1, 0], "idx": [0, 1]}
    assert data["validation"].features["label"].names == ["unacceptable", "acceptable"]
    write_tsv(tmp_path / "CoLA" / "dev.tsv", [["gj04", "0", "They drank the pub."]])
    with pytest.raises(GlueError, match=r"CoLA/dev.tsv, line 1: expected 4 tab-separated fields \(source, label, original_label, "
                                        r"sentence\), found 3"):
        load_glue("cola", tmp_path)


def test_mnli_has_matched_and_mismatched_dev_sets(tmp_path):
    base = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
            "sentence2_parse", "sentence1", "sentence2"]
    parses = ["( x )", "( y )", "(ROOT x)", "(ROOT y)"]
    write_tsv(tmp_path / "MNLI" / "train.tsv", [
        [*base, "label1", "gold_label"],
        ["0", "31193", "31193n", "government", *parses, "Conceptually cream skimming has two dimensions.",
         "Product and geography are what make cream skimming work.", "neutral", "neutral"],
        ["1", "101457", "101457e", "telephone", *parses, "you know during the season", "You lose the things.", "entailment",
         "entailment"],
    ])
    dev = [*base, "label1", "label2", "label3", "label4", "label5", "gold_label"]
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv",
              [dev, ["0", "63735", "63735n", "slate", *parses, "The new rights are nice enough", "Everyone really likes it.",
                     "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]])
    write_tsv(tmp_path / "MNLI" / "dev_mismatched.tsv",
              [dev, ["0", "75290", "75290c", "letters", *parses, "Your contribution helped.", "It did not help.",
                     "contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"]])
    data = load_glue("mnli", tmp_path)
    assert list(data) == ["train", "validation_matched", "validation_mismatched"]
    assert data["train"].column_names == ["premise", "hypothesis", "label", "idx"]
    assert data["train"]["label"] == [1, 0] and data["validation_matched"]["label"] == [1]
    assert data["validation_mismatched"][0] == {"premise": "Your contribution helped.", "hypothesis": "It did not help.",
                                                "label": 2, "idx": 0}
    (tmp_path / "MNLI" / "dev_mismatched.tsv").unlink()
    with pytest.raises(GlueError, match=r"MNLI/dev_mismatched.tsv: file not found; .*MNLI/dev_matched.tsv and MNLI/dev_mismatched.tsv"):
        load_glue("mnli", tmp_path)


@pytest.mark.parametrize(("name", "header", "row", "expected"), [
    ("qqp", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
     ["133273", "213221", "213222", "How is the life of a math student?", "Which level of prepration is enough?", "0"],
     {"question1": "How is the life of a math student?", "question2": "Which level of prepration is enough?", "label": 0}),
    ("qnli", ["index", "question", "sentence", "label"],
     ["0", "What came into force after the new constitution?", "The law came into force.", "entailment"],
     {"question": "What came into force after the new constitution?", "sentence": "The law came into force.", "label": 0}),
    ("wnli", ["index", "sentence1", "sentence2", "label"],
     ["0", "I stuck a pin through a carrot.", "The carrot had a hole.", "1"],
     {"sentence1": "I stuck a pin through a carrot.", "sentence2": "The carrot had a hole.", "label": 1}),
])
def test_other_task_layouts(tmp_path, name, header, row, expected):
    task = get_task(name)
    for file in task.files.values():
        write_tsv(tmp_path / task.folder / file, [header, row])
    data = load_glue(task, tmp_path)
    assert data["validation"][0] == {**expected, "idx": 0}
    assert data["train"].features["label"].names == list(task.label_names)


def test_task_names_and_registry():
    assert GLUE_TASKS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
    assert [get_task(n).name for n in ("SST-2", "STS-B", "sts_b", "MNLI")] == ["sst2", "stsb", "stsb", "mnli"]
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3 and get_task("rte").num_labels == 2
    assert get_task("rte").label_names == ("entailment", "not_entailment")
    with pytest.raises(GlueError, match="unknown GLUE task 'sst'; choose from cola, sst2"):
        get_task("sst")


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


@pytest.mark.parametrize(("lines", "error"), [
    ([RTE_HEADER, ["0", "A man sleeps.", "entailment"]],
     r"train.tsv, line 2: expected 4 tab-separated fields \(index, sentence1, sentence2, label\), found 3"),
    ([RTE_HEADER, ["0", "A", "B", "entailment"], ["1", "A", "B", "C", "entailment"]],
     r"train.tsv, line 3: expected 4 tab-separated fields .*, found 5"),
    ([RTE_HEADER, ["0", "A", "B", "entailment"], ["1", "A", "B", "1"]],
     r"train.tsv, line 3: bad label '1' in column 'label'; expected one of 'entailment', 'not_entailment'"),
    ([["index", "premise", "hypothesis", "label"], ["0", "A", "B", "entailment"]],
     r"train.tsv, line 1: the header lacks column\(s\) 'sentence1', 'sentence2'; expected the RTE layout"),
    ([RTE_HEADER], r"train.tsv: no data rows"),
    ([], r"train.tsv, line 1: no header"),
])
def test_malformed_files_name_the_file_line_and_expectation(tmp_path, lines, error):
    path = write_tsv(tmp_path / "RTE" / "train.tsv", lines)
    with pytest.raises(GlueError, match=error) as info:
        read_glue_tsv("rte", path)
    assert str(path) in str(info.value)


def test_stsb_score_must_be_a_number(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    path = write_tsv(tmp_path / "train.tsv", [header, ["0", "main", "MSRvid", "2012", "1", "none", "none", "A.", "B.", "high"]])
    with pytest.raises(GlueError, match=r"line 2: bad label 'high' in column 'score'; expected a similarity score"):
        read_glue_tsv("stsb", path)


def test_mrpc_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tHe said \" yes .\tHe agreed .\r\n\r\n".encode())
    assert read_glue_tsv("mrpc", path) == {"sentence1": ['He said " yes .'], "sentence2": ["He agreed ."], "label": [1], "idx": [0]}
    path.write_bytes(b"Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\t\xff\tB\n")
    with pytest.raises(GlueError, match="line 2: not valid UTF-8"):
        read_glue_tsv("mrpc", path)


# ---------------------------------------------------------------------------------------------
# Metrics and the GLUE score
# ---------------------------------------------------------------------------------------------


def test_metrics_per_task():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [0.0, 1.0], [5.0, 0.0]])  # predicts 0, 1, 1, 0
    labels = np.array([0, 1, 0, 1])
    assert compute_metrics("sst2", logits, labels) == {"accuracy": 0.5}
    assert compute_metrics("mrpc", logits, labels) == {"accuracy": 0.5, "f1": 0.5}
    assert compute_metrics("cola", logits, labels) == {"accuracy": 0.5, "matthews_correlation": 0.0}
    assert compute_metrics("cola", logits, np.array([0, 1, 1, 0]))["matthews_correlation"] == 1.0
    stsb = compute_metrics("stsb", np.array([[0.0], [1.0], [4.0], [2.0]]), np.array([1.0, 2.0, 5.0, 3.0]))
    assert stsb == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}
    assert compute_metrics("stsb", np.zeros((4, 1)), np.array([1.0, 2.0, 5.0, 3.0])) == {"pearson": 0.0, "spearman": 0.0}


def test_glue_score_rule_with_made_up_metrics():
    metrics = {
        "cola": {"validation": {"accuracy": 0.9, "matthews_correlation": 0.5}},
        "sst2": {"validation": {"accuracy": 0.9}},
        "mrpc": {"validation": {"accuracy": 0.8, "f1": 0.9}},
        "stsb": {"validation": {"pearson": 0.8, "spearman": 0.7}},
        "qqp": {"validation": {"accuracy": 0.9, "f1": 0.8}},
        "mnli": {"validation_matched": {"accuracy": 0.8}, "validation_mismatched": {"accuracy": 0.7}},
        "qnli": {"validation": {"accuracy": 0.85}},
        "rte": {"validation": {"accuracy": 0.6}},
        "wnli": {"validation": {"accuracy": 0.3}},
    }
    scores = {task: task_score(task, m) for task, m in metrics.items()}
    expected = {"cola": 50.0, "sst2": 90.0, "mrpc": 85.0, "stsb": 75.0, "qqp": 85.0, "mnli": 75.0, "qnli": 85.0, "rte": 60.0,
                "wnli": 30.0}
    assert scores == pytest.approx(expected, abs=1e-9)
    assert DEFAULT_TASKS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
    assert glue_score_of(scores) == pytest.approx(605 / 8)  # WNLI left out by default
    assert glue_score_of(scores, GLUE_TASKS) == pytest.approx(635 / 9)
    assert glue_score_of(scores, ["rte", "MRPC"]) == pytest.approx(72.5)
    with pytest.raises(GlueError, match=r"mnli: no metrics for \['validation_mismatched'\]"):
        task_score("mnli", {"validation_matched": {"accuracy": 0.8}})
    with pytest.raises(GlueError, match=r"lack \['f1'\]"):
        task_score("mrpc", {"validation": {"accuracy": 0.8}})
    with pytest.raises(GlueError, match=r"no score for task\(s\) \['qnli'\]"):
        glue_score_of({"rte": 60.0}, ["rte", "qnli"])


def test_write_json_atomic_keeps_the_old_file_on_failure(tmp_path):
    path = write_json_atomic(tmp_path / "results.json", {"score": 1.5})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json_atomic(path, {"score": math.nan})
    assert json.loads(path.read_text()) == {"score": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---------------------------------------------------------------------------------------------
# Fine-tuning and the GLUE score, end to end on a tiny model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer FlexiBERT MLM model saved with a BPE tokenizer trained on the SST-2 sentences."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"real GLUE TSVs not found in {GLUE_DIR}")
    folder = tmp_path_factory.mktemp("tiny_flexibert")
    text = folder / "sst2.txt"
    text.write_text("\n".join(read_glue_tsv("sst2", GLUE_DIR / "SST-2" / "train.tsv")["sentence"]))
    tokenizer = train_bpe_tokenizer([text], folder / "model", vocab_size=2000, max_length=64)
    config = FlexiBERTConfig.from_model_dict(TINY_MODEL, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                             max_position_embeddings=64)
    torch.manual_seed(0)
    FlexiBERTForMaskedLM(config).save_pretrained(folder / "model")
    return folder / "model"


@needs_glue
@pytest.mark.slow
def test_finetuning_a_tiny_model_on_sst2_beats_chance(tiny_model, tmp_path, capsys):
    output = tmp_path / "sst2"
    results = finetune_flexibert.main([
        "--model_name_or_path", str(tiny_model), "--task_name", "sst2", "--glue_dir", str(GLUE_DIR), "--output_dir", str(output),
        "--max_train_samples", "4000", "--num_train_epochs", "2", "--per_device_train_batch_size", "32", "--learning_rate", "1e-3",
        "--warmup_ratio", "0.1", "--max_seq_length", "64", "--seed", "1",
    ])
    accuracy = results["metrics"]["validation"]["accuracy"]
    assert accuracy >= 0.65, f"dev accuracy {accuracy:.3f} after fine-tuning is too close to chance (0.51)"
    assert results["score"] == pytest.approx(100 * accuracy)
    assert results["metrics"]["validation"]["samples"] == 872 and results["train_samples"] == 4000
    assert results["global_step"] == 250 and results["evaluated_model"] == "final"
    assert results["encoder_parameters"] + 64 * 2 + 2 == results["parameters"]  # the classifier: Linear(64, 2)
    assert json.loads((output / "results.json").read_text()) == results
    assert not list(output.glob("checkpoint-*"))  # deleted once finished
    out = capsys.readouterr().out
    assert "sst2: evaluating the final model after 250 steps on validation" in out
    assert out.strip().splitlines()[-1].startswith("sst2: score ")


@needs_glue
@pytest.mark.slow
def test_stsb_regression_from_a_tokenized_dataset(tiny_model, tmp_path, capsys):
    data_dir = tmp_path / "GLUE_data"
    written = tokenize_glue_datasets.main(["--tokenizer", str(tiny_model), "--glue_dir", str(GLUE_DIR), "--tasks", "stsb",
                                           "--max_seq_length", "64", "--output_dir", str(data_dir)])
    assert written == {"stsb": 5749 + 1500}
    from datasets import load_from_disk

    saved = load_from_disk(str(data_dir / "stsb"))
    assert saved["train"].column_names == ["label", "input_ids", "attention_mask"]
    first = saved["train"][0]["input_ids"]  # "<s> A plane is taking off. </s></s> An air plane is taking off. </s>"
    eos = [i for i, token in enumerate(first) if token == 2]
    assert first[0] == 0 and len(eos) == 3 and eos[1] == eos[0] + 1 and eos[2] == len(first) - 1
    assert max(len(ids) for ids in saved["validation"]["input_ids"]) <= 64
    assert tokenize_glue_datasets.main(["--tokenizer", str(tiny_model), "--tasks", "stsb", "--output_dir", str(data_dir)]) == {}
    argv = ["--model_name_or_path", str(tiny_model), "--task_name", "stsb", "--dataset_dir", str(data_dir), "--output_dir",
            str(tmp_path / "stsb"), *QUICK]
    with pytest.raises(SystemExit, match=rf"--dataset_dir {data_dir}: no tokenised rte dataset"):
        finetune_flexibert.main([*argv, "--task_name", "rte"])
    train_bpe_tokenizer([ROOT / "README.md"], tmp_path / "other", vocab_size=300, min_frequency=1)
    with pytest.raises(SystemExit, match=r"stsb was tokenised with another tokenizer \(.*: size 2000, pad id 1\) than this one \(size 300"):
        finetune_flexibert.main([*argv, "--tokenizer", str(tmp_path / "other")])
    results = finetune_flexibert.main(argv)
    metrics = results["metrics"]["validation"]
    assert results["global_step"] == 3 and metrics["samples"] == 40
    assert -1 <= metrics["pearson"] <= 1 and -1 <= metrics["spearman"] <= 1 and metrics["loss"] > 0
    assert results["score"] == pytest.approx(50 * (metrics["pearson"] + metrics["spearman"]))
    assert "validation pearson" in capsys.readouterr().out


@needs_glue
@pytest.mark.slow
def test_finetuning_resumes_from_its_last_checkpoint(tiny_model, tmp_path, capsys):
    argv = ["--model_name_or_path", str(tiny_model), "--task_name", "rte", "--glue_dir", str(GLUE_DIR), "--output_dir", str(tmp_path),
            *QUICK, "--save_steps", "2", "--keep_checkpoints"]
    first = finetune_flexibert.main([*argv, "--max_steps", "4"])
    assert first["global_step"] == 4 and (tmp_path / "checkpoint-4").is_dir()
    assert finetune_flexibert.main([*argv, "--max_steps", "6"]) == first  # finished: kept, not redone
    assert "rte: already finished" in capsys.readouterr().out
    (tmp_path / "results.json").unlink()  # as if the job had been killed before the end
    resumed = finetune_flexibert.main([*argv, "--max_steps", "6"])
    assert resumed["global_step"] == 6
    assert f"rte: resuming from {tmp_path / 'checkpoint-4'}" in capsys.readouterr().out


@needs_glue
@pytest.mark.slow
def test_load_best_model_at_end_evaluates_every_epoch(tiny_model, tmp_path, capsys):
    results = finetune_flexibert.main([
        "--model_name_or_path", str(tiny_model), "--task_name", "rte", "--glue_dir", str(GLUE_DIR), "--output_dir", str(tmp_path),
        *QUICK, "--max_steps", "-1", "--num_train_epochs", "2", "--load_best_model_at_end"])
    assert results["evaluated_model"] == "best epoch" and results["global_step"] == 12
    out = capsys.readouterr().out
    assert out.count("'eval_validation_score'") == 2  # one evaluation per epoch, by the score that picks the best
    assert "rte: evaluating the best epoch's model (by dev score) after 12 steps" in out


@needs_glue
def test_finetuning_refuses_mismatched_settings(tiny_model, tmp_path):
    base = ["--model_name_or_path", str(tiny_model), "--task_name", "rte", "--glue_dir", str(GLUE_DIR), "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="sequences of up to 128 tokens exceed the model's max_position_embeddings 64"):
        finetune_flexibert.main(base)
    small = FlexiBERTConfig.from_model_dict(TINY_MODEL, vocab_size=300, max_position_embeddings=64)
    FlexiBERTForMaskedLM(small).save_pretrained(tmp_path / "small_vocab")
    with pytest.raises(SystemExit, match=r"the tokenizer \(size 2000, pad id 1\) does not match the model \(vocab_size 300"):
        finetune_flexibert.main([*base, "--model_name_or_path", str(tmp_path / "small_vocab"), "--tokenizer", str(tiny_model),
                                 "--max_seq_length", "64"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--bf16/--fp16 need a CUDA GPU"):
            finetune_flexibert.main([*base, "--bf16"])
    with pytest.raises(SystemExit, match="--model_name_or_path .* cannot read a model config"):
        finetune_flexibert.main([*base[2:], "--model_name_or_path", str(tmp_path / "missing")])
    partial = tmp_path / "partial"  # weights without the encoder layers: must not quietly fine-tune a random encoder
    FlexiBERTForMaskedLM.from_pretrained(tiny_model).save_pretrained(partial)
    weights = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".encoder." not in k}, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit, match=r"partial lacks encoder weights \(bert.encoder.layer.0"):
        finetune_flexibert.main([*base[2:], "--model_name_or_path", str(partial)])


@needs_glue
@pytest.mark.slow
def test_glue_score_combines_tasks_and_resumes(tiny_model, tmp_path, capsys):
    argv = ["--model_name_or_path", str(tiny_model), "--glue_dir", str(GLUE_DIR), "--tasks", "mrpc", "rte", "--output_dir", str(tmp_path),
            *QUICK]
    results = glue_score.main(argv)
    assert results["tasks"] == ["mrpc", "rte"] and set(results["scores"]) == {"mrpc", "rte"}
    mrpc = results["metrics"]["mrpc"]["validation"]
    assert results["scores"]["mrpc"] == pytest.approx(50 * (mrpc["accuracy"] + mrpc["f1"]))
    assert results["glue_score"] == pytest.approx((results["scores"]["mrpc"] + results["scores"]["rte"]) / 2)
    assert results["encoder_parameters"] > 0 and results["wall_time_s"] > 0
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"GLUE score {results['glue_score']:.2f} over 2 task(s)")
    stamps = {task: (tmp_path / task / "results.json").stat().st_mtime_ns for task in ("mrpc", "rte")}
    again = glue_score.main(argv)
    assert again == results
    assert {task: (tmp_path / task / "results.json").stat().st_mtime_ns for task in ("mrpc", "rte")} == stamps
    out = capsys.readouterr().out
    assert "mrpc: already finished" in out and "rte: already finished" in out


@needs_glue
@pytest.mark.slow
def test_glue_score_under_torchrun_is_data_parallel_and_reports_once(tiny_model, tmp_path):
    """Two CPU processes (DDP over gloo): half the optimizer steps of one process, one results file, one report, exit 0."""
    def glue_score_argv(output: Path) -> list[str]:
        return ["--model_name_or_path", str(tiny_model), "--tasks", "sst2", "--glue_dir", str(GLUE_DIR), "--output_dir", str(output),
                "--max_train_samples", "256", "--max_eval_samples", "64", "--num_train_epochs", "1",
                "--per_device_train_batch_size", "16", "--max_seq_length", "64"]

    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "flexibert/glue_score.py",
                          *glue_score_argv(tmp_path / "ddp")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "terminate called" not in ddp.stderr
    assert "find_unused_parameters=True" not in ddp.stderr  # no extra autograd traversal per step (HF's default is True)
    assert ddp.stdout.count("sst2: evaluating the final model after 8 steps") == 1  # 256 / (16 x 2 processes)
    assert ddp.stdout.count("GLUE score ") == 1
    distributed = json.loads((tmp_path / "ddp" / "sst2" / "results.json").read_text())
    single = glue_score.main(glue_score_argv(tmp_path / "single"))["metrics"]["sst2"]
    assert distributed["global_step"] == 8 and json.loads((tmp_path / "single" / "sst2" / "results.json").read_text())["global_step"] == 16
    assert distributed["metrics"]["validation"]["samples"] == single["validation"]["samples"] == 64  # every example evaluated once
