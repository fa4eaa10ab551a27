"""run_boshnas.py refuses, in seconds and before it writes the run folder, inputs that would fail every job (after hours of
pretraining, three times each): the prepared corpus, the tokenizer, the GLUE tasks and data, the benchmark file, the library's
hashes. Each refusal is one ``error: ...`` line that names the problem and the fix (flexibert/search/controller.py's checks).

The inputs are real and tiny: a BPE tokenizer and a corpus prepared by the project's own scripts (save_roberta_tokenizer.py,
prepare_pretrain_dataset.py) from Python's documentation (pydoc_data, in every Python), a library of four models and its
synthetic benchmark, GLUE-layout TSVs.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from embeddings.library import Library
from flexibert import prepare_pretrain_dataset, run_boshnas, save_roberta_tokenizer
from flexibert.search.benchmarks import synthetic_scores
from flexibert.search.settings import parse_args
from flexibert.search.start_checks import check_training_inputs

SEQ = 32
MODELS = [{"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[f1], [f2]], "p": ["sdp", "sdp"]}
          for f1, f2 in ((128, 128), (128, 256), (256, 128), (256, 256))]
SECONDS = 15  # a refusal comes before any job: seconds (on 2 shared cores), where a job pretrains for hours


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A tokenizer (vocab 400) and a corpus prepared with it at SEQ tokens; a second tokenizer (vocab 300); a library of four
    models and its benchmark; a GLUE folder with RTE only."""
    work = tmp_path_factory.mktemp("start_checks")
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(line for topic in list(topics.values())[:40] for line in topic.splitlines() if line.strip()))
    with contextlib.redirect_stdout(io.StringIO()):
        for name, vocab in (("tokenizer", "400"), ("other_tokenizer", "300")):
            save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", vocab, "--output_dir", str(work / name)])
        prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(work / "tokenizer"), "--max_seq_length",
                                       str(SEQ), "--cache_dir", str(work / "hf_cache"), "--output_dir", str(work / "dataset")])
        library = Library.from_model_dicts(MODELS)
        library.build_embeddings(embedding_size=2, num_neighbors=2, seed=0)
    library.save(work / "library.json")
    (work / "benchmark.json").write_text(json.dumps({"entries": synthetic_scores(library, seed=0)}))
    for name in ("train.tsv", "dev.tsv"):
        (work / "glue" / "RTE").mkdir(parents=True, exist_ok=True)
        (work / "glue" / "RTE" / name).write_text("index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tA cat.\tentailment\n")
    return {"work": work, "tokenizer": work / "tokenizer", "other_tokenizer": work / "other_tokenizer", "dataset": work / "dataset",
            "library": work / "library.json", "benchmark": work / "benchmark.json", "glue": work / "glue"}


def training_argv(inputs: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    """A training search on RTE whose inputs are all right except what ``extra`` changes (the last of a repeated flag wins)."""
    return ["--dataset_file", str(inputs["library"]), "--run_dir", str(run_dir), "--executor", "inline", "--task", "rte",
            "--tokenizer", str(inputs["tokenizer"]), "--pretrain_dataset_dir", str(inputs["dataset"]), "--glue_dir",
            str(inputs["glue"]), "--pretrain_args", f"--max_seq_length {SEQ}", *extra]


def benchmark_argv(inputs: dict[str, Path], run_dir: Path, benchmark: Path, *extra: str) -> list[str]:
    return ["--dataset_file", str(inputs["library"]), "--benchmark_file", str(benchmark), "--executor", "inline",
            "--run_dir", str(run_dir), "--strategy", "random", "--num_init", "2", "--budget", "4", *extra]


def refused(argv: list[str], run_dir: Path) -> str:
    """The error line run_boshnas exits with, checked to come in seconds and to leave no run folder (no journal, no job)."""
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stopped:
        run_boshnas.main(argv)
    assert time.perf_counter() - start < SECONDS
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_the_right_training_inputs_pass(inputs, tmp_path):
    check_training_inputs(parse_args(training_argv(inputs, tmp_path / "run")))
    check_training_inputs(parse_args(training_argv(inputs, tmp_path / "run", "--glue_tasks", "RTE", "--task", "glue")))
    assert not (tmp_path / "run").exists()


def test_a_corpus_prepared_at_another_length_names_both_lengths_and_the_fix(inputs, tmp_path):
    """The README's offline preparation at 128 tokens, then a search at pretrain_flexibert.py's default of 512."""
    run_dir = tmp_path / "run"
    message = refused(training_argv(inputs, run_dir, "--pretrain_args", ""), run_dir)
    assert f"holds sequences of {SEQ} tokens" in message and "--max_seq_length 512 (pretrain_flexibert.py's default)" in message
    assert f'--pretrain_args "--max_seq_length {SEQ}"' in message and "re-prepare it at 512 tokens" in message
    assert "prepare_pretrain_dataset.py" in message and "--max_seq_length 512" in message

    message = refused(training_argv(inputs, run_dir, "--pretrain_args", "--learning_rate 1e-3 --max_seq_length 64"), run_dir)
    assert "--max_seq_length 64 (set by --pretrain_args)" in message
    assert f'--pretrain_args "--learning_rate 1e-3 --max_seq_length {SEQ}"' in message

    # Prepared elsewhere (no preparation.json): the length of its sequences.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(inputs["dataset"], elsewhere)
    (elsewhere / "preparation.json").unlink()
    message = refused(training_argv(inputs, run_dir, "--pretrain_dataset_dir", str(elsewhere), "--pretrain_args", ""), run_dir)
    assert f"holds sequences of {SEQ} tokens" in message and f'--pretrain_args "--max_seq_length {SEQ}"' in message


def test_a_missing_or_unprepared_corpus_is_refused(inputs, tmp_path):
    run_dir = tmp_path / "run"
    message = refused(training_argv(inputs, run_dir, "--pretrain_dataset_dir", str(tmp_path / "nowhere")), run_dir)
    assert f"--pretrain_dataset_dir {tmp_path / 'nowhere'}: no such folder" in message
    assert f"prepare_pretrain_dataset.py --tokenizer {inputs['tokenizer']} --max_seq_length {SEQ}" in message

    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "corpus.txt").write_text("plain text, not prepared\n")
    message = refused(training_argv(inputs, run_dir, "--pretrain_dataset_dir", str(tmp_path / "texts")), run_dir)
    assert f"{tmp_path / 'texts'} is not a prepared pretraining corpus (no dataset_dict.json)" in message
    assert "prepare_pretrain_dataset.py" in message

    cut = tmp_path / "cut"
    shutil.copytree(inputs["dataset"], cut)
    for shard in (cut / "train").glob("*.arrow"):
        shard.unlink()  # a copy that stopped half-way
    message = refused(training_argv(inputs, run_dir, "--pretrain_dataset_dir", str(cut)), run_dir)
    assert f"--pretrain_dataset_dir {cut} does not load (FileNotFoundError" in message and "--overwrite" in message


def test_a_tokenizer_that_is_missing_or_does_not_load_or_does_not_fit_the_corpus_is_refused(inputs, tmp_path):
    run_dir = tmp_path / "run"
    message = refused(training_argv(inputs, run_dir, "--tokenizer", str(tmp_path / "roberta_tokenizer")), run_dir)
    assert "no such tokenizer folder" in message and "save_roberta_tokenizer.py" in message

    broken = tmp_path / "broken"
    shutil.copytree(inputs["tokenizer"], broken)
    (broken / "tokenizer.json").write_text((broken / "tokenizer.json").read_text()[:1000])  # cut by a full disk
    (broken / "vocab.json").unlink(missing_ok=True)
    message = refused(training_argv(inputs, run_dir, "--tokenizer", str(broken)), run_dir)
    assert f"--tokenizer {broken} holds no tokenizer that loads" in message and "save_roberta_tokenizer.py" in message

    # A tokenizer that loads but is not the corpus's: the models' vocabulary would not match the corpus's ids.
    message = refused(training_argv(inputs, run_dir, "--tokenizer", str(inputs["other_tokenizer"])), run_dir)
    assert f"{inputs['dataset']} was tokenised with a vocabulary of 400 tokens" in message and "has 300" in message
    assert "use the tokenizer it was prepared with" in message


def test_unknown_task_names_are_refused_by_argparse_with_the_valid_names(inputs, tmp_path, capsys):
    for flags, said in ((["--glue_tasks", "sst2", "foo"], "argument --glue_tasks: unknown GLUE task 'foo'; choose from cola, sst2"),
                        (["--task", "foo"], "argument --task: invalid choice: 'foo'")):
        start = time.perf_counter()
        with pytest.raises(SystemExit) as stopped:
            run_boshnas.main(training_argv(inputs, tmp_path / "run", *flags))
        assert stopped.value.code == 2 and time.perf_counter() - start < SECONDS
        err = capsys.readouterr().err
        assert said in err and "rte" in err and "wnli" in err
    assert not (tmp_path / "run").exists()
    assert parse_args(["--dataset_file", "x", "--glue_tasks", "SST-2", "rte"]).glue_tasks == ["SST-2", "rte"]  # glue.py's spellings


def test_a_glue_dir_without_a_task_s_files_names_the_task_and_the_files(inputs, tmp_path):
    run_dir = tmp_path / "run"
    message = refused(training_argv(inputs, run_dir, "--task", "sst2"), run_dir)
    assert f"--glue_dir {inputs['glue']} lacks task sst2's SST-2/train.tsv, SST-2/dev.tsv" in message
    assert "(--glue_tasks / --task)" in message

    message = refused(training_argv(inputs, run_dir, "--task", "glue", "--glue_tasks", "rte", "mnli"), run_dir)
    assert "lacks task mnli's MNLI/train.tsv, MNLI/dev_matched.tsv, MNLI/dev_mismatched.tsv" in message

    message = refused(training_argv(inputs, run_dir, "--glue_dir", str(tmp_path / "GLUE")), run_dir)
    assert f"--glue_dir {tmp_path / 'GLUE'}: no such folder" in message and "leave --glue_dir out" in message


def test_a_benchmark_that_misses_library_models_says_how_many_which_and_the_fix(inputs, tmp_path):
    entries = json.loads(inputs["benchmark"].read_text())["entries"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"entries": entries[1:]}))
    run_dir = tmp_path / "run"
    message = refused(benchmark_argv(inputs, run_dir, partial), run_dir)
    assert f"--benchmark_file {partial} does not score 1 of the 4 models of --dataset_file" in message
    assert f"(the first: {entries[0]['model_hash'][:16]})" in message
    assert f"build the library from the benchmark's models (python embeddings/generate_library.py --model_dicts {partial}" in message


def test_a_benchmark_without_the_metric_lists_the_columns_it_has(inputs, tmp_path):
    run_dir = tmp_path / "run"
    message = refused(benchmark_argv(inputs, run_dir, inputs["benchmark"], "--benchmark_metric", "accuracy"), run_dir)
    assert "--benchmark_metric accuracy: 4 of the 4 library models have no numeric 'accuracy' score" in message
    assert "its numeric columns: glue, glue_noise_free" in message

    entries = json.loads(inputs["benchmark"].read_text())["entries"]
    entries[2]["scores"]["glue"] = "81.2"  # a string, as a spreadsheet export writes it
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"entries": entries}))
    message = refused(benchmark_argv(inputs, run_dir, texts), run_dir)
    assert "1 of the 4 library models have no numeric 'glue' score" in message and entries[2]["model_hash"][:16] in message


@pytest.mark.parametrize("content, said", [
    ("[]", 'bad.json holds a JSON list, not a benchmark file: expected {"entries": [{"model_dict": ..., "scores": {...}}, ...]}'),
    ('{"entries": [{"model_hash": "ab', "is not valid JSON (Unterminated string"),
    ('{"entries": [{"model_hash": "ab", "model_dict": {}}]}', 'entry #0 has no "scores" object (its keys: model_hash, model_dict)'),
    ('{"entries": [{"model_hash": "ab", "scores": 80}]}', 'entry #0 has no "scores" object ("scores" is 80)'),
    ('{"models": []}', "holds an object with the keys models, not a benchmark file"),
], ids=["a-list", "truncated", "no-scores", "scores-not-an-object", "other-object"])
def test_a_file_that_is_not_a_benchmark_gets_one_clear_line(inputs, tmp_path, content, said):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    run_dir = tmp_path / "run"
    message = refused(benchmark_argv(inputs, run_dir, bad), run_dir)
    assert said in message, message
    if "truncated" in said or "Unterminated" in said:
        assert "the file may be truncated" in message


def test_a_library_whose_stored_hashes_are_not_its_model_dicts_hashes_is_refused(inputs, tmp_path):
    data = json.loads(inputs["library"].read_text())
    data["hashes"][1], data["hashes"][2] = data["hashes"][2], data["hashes"][1]  # rows edited by hand
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    run_dir = tmp_path / "run"
    message = refused(["--dataset_file", str(edited), "--benchmark_file", str(inputs["benchmark"]), "--executor", "inline",
                       "--run_dir", str(run_dir)], run_dir)
    stored, actual = data["hashes"][1], data["hashes"][2]
    assert f"--dataset_file {edited}: entry #1 stores the hash {stored} but its model dict hashes to {actual}" in message
    assert "(checked 4 of 4 entries)" in message and "rebuild it with embeddings/generate_library.py" in message


def test_the_hash_sample_is_checked_on_a_resume_too(inputs, tmp_path):
    library = tmp_path / "library.json"
    shutil.copy(inputs["library"], library)
    run_dir = tmp_path / "run"
    argv = ["--dataset_file", str(library), "--benchmark_file", str(inputs["benchmark"]), "--executor", "inline", "--run_dir",
            str(run_dir), "--strategy", "random", "--num_init", "2", "--budget", "2"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert len(run_boshnas.main(argv).finished) == 2
    data = json.loads(library.read_text())
    data["model_dicts"][3]["f"] = [[512], [512]]  # edited in place, its stored hash kept
    library.write_text(json.dumps(data))
    journal = (run_dir / "journal.jsonl").read_text()
    with pytest.raises(SystemExit, match="entry #3 stores the hash .* rebuild it with embeddings/generate_library.py"):
        run_boshnas.main([*argv[:-1], "3"])
    assert (run_dir / "journal.jsonl").read_text() == journal


def test_a_run_dir_that_is_a_file_or_under_one_is_refused_in_one_line(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    for run_dir, said in ((afile, "is a file, not a folder; give the folder the run should write to"),
                          (afile / "run", f"{afile} is a file, not a folder; choose another run folder")):
        with pytest.raises(SystemExit) as stopped:
            parse_args(["--dataset_file", "x", "--run_dir", str(run_dir)])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and f"error: --run_dir {run_dir}: {said}" in err and "Traceback" not in err
    assert afile.read_text() == "not a folder"
