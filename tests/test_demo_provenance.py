"""The demo's cached steps record what they were built from, and are rebuilt (saying why) when that changes; the next-level
library is built only from a search that ended."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embeddings.library import Library
from flexibert import demo
from flexibert.search.journal import Journal

REPO = Path(__file__).resolve().parents[1]
TINY = ["--data", "offline", "--budget", "1", "--num_init", "1", "--pretrain_steps", "10", "--transfer_pretrain_steps", "5",
        "--train_samples", "64", "--eval_samples", "64", "--finetune_epochs", "1", "--vocab_size", "1000", "--max_seq_length", "32"]


class Builder:
    """A build step that writes ``content`` into its output and counts its runs."""

    def __init__(self, output: Path, content: str = "v1") -> None:
        self.output, self.content, self.runs = output, content, 0

    def __call__(self) -> None:
        self.runs += 1
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / "model.txt").write_text(self.content)


def test_a_stage_is_built_once_and_kept_while_its_inputs_are_the_same(tmp_path, capsys):
    build = Builder(tmp_path / "out")
    stage = demo.Stage("thing", tmp_path / "out", {"size": 1}).ensure(build)
    record = json.loads((tmp_path / "out.stage.json").read_text())
    assert record["inputs"] == {"size": 1} and list(record["output_files"]) == ["model.txt"] and record["digest"] == stage.digest
    demo.Stage("thing", tmp_path / "out", {"size": 1}).ensure(build)
    assert build.runs == 1 and f"thing: kept {tmp_path / 'out'}" in capsys.readouterr().out


def test_changed_inputs_rebuild_the_stage_and_say_what_changed(tmp_path, capsys):
    build = Builder(tmp_path / "out")
    demo.Stage("tokenizer", tmp_path / "out", {"vocab_size": 1000, "text": {"paths": ["/a.txt"], "content": "sha256:1"}}).ensure(build)
    (tmp_path / "out" / "stale.txt").write_text("from the old build")
    demo.Stage("tokenizer", tmp_path / "out", {"vocab_size": 1000, "text": {"paths": ["/b.txt"], "content": "sha256:2"}}).ensure(build)
    printed = capsys.readouterr().out
    assert build.runs == 2 and not (tmp_path / "out" / "stale.txt").exists()  # rebuilt from scratch
    assert f'tokenizer: rebuilding {tmp_path / "out"}: text.content: was "sha256:1", now "sha256:2"; text.paths: was ["/a.txt"], ' \
           'now ["/b.txt"]' in printed


def test_a_rebuilt_stage_rebuilds_the_stages_after_it(tmp_path, capsys):
    def pipeline(text: str) -> tuple[Builder, Builder]:
        first, second = Builder(tmp_path / "tokenizer", text), Builder(tmp_path / "dataset")
        upstream = demo.Stage("tokenizer", tmp_path / "tokenizer", {"text": text}).ensure(first)
        demo.Stage("pretraining data", tmp_path / "dataset", {"upstream": {"tokenizer": upstream.digest}}).ensure(second)
        return first, second

    pipeline("v1")
    assert [b.runs for b in pipeline("v1")] == [0, 0]
    capsys.readouterr()
    assert [b.runs for b in pipeline("v2")] == [1, 1]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("tokenizer: rebuilding") and printed[0].endswith('text: was "v1", now "v2"')
    assert printed[1] == f"pretraining data: rebuilding {tmp_path / 'dataset'}: tokenizer changed"


def test_a_downstream_stage_names_the_upstream_stage_that_changed(tmp_path, capsys):
    build = Builder(tmp_path / "dataset")
    demo.Stage("pretraining data", tmp_path / "dataset", {"upstream": {"tokenizer": "sha256:1"}, "max_seq_length": 64}).ensure(build)
    demo.Stage("pretraining data", tmp_path / "dataset", {"upstream": {"tokenizer": "sha256:2"}, "max_seq_length": 32}).ensure(build)
    assert "pretraining data: rebuilding" in (out := capsys.readouterr().out) and "max_seq_length: was 64, now 32; tokenizer changed" in out


def test_an_output_changed_after_its_build_is_rebuilt_but_added_files_do_not_count(tmp_path, capsys):
    build = Builder(tmp_path / "out")
    stage = demo.Stage("thing", tmp_path / "out", {})
    stage.ensure(build)
    (tmp_path / "out" / "cache-1234.arrow").write_text("a cache a reader added")
    stage.ensure(build)
    assert build.runs == 1
    (tmp_path / "out" / "model.txt").write_text("edited")
    stage.ensure(build)
    assert build.runs == 2 and "its files changed since it was built (model.txt)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "out")
    stage.ensure(build)
    assert build.runs == 3 and "thing: rebuilding" in capsys.readouterr().out


def test_an_interrupted_build_leaves_no_record_and_is_rebuilt(tmp_path, capsys):
    def interrupted() -> None:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo.Stage("thing", tmp_path / "out", {}).ensure(interrupted)
    assert not (tmp_path / "out.stage.json").exists()
    build = Builder(tmp_path / "out")
    demo.Stage("thing", tmp_path / "out", {}).ensure(build)
    assert build.runs == 1 and not (tmp_path / "out" / "half.txt").exists()
    assert "no record of what it was built from (an interrupted build" in capsys.readouterr().out


def test_input_files_are_fingerprinted_by_content_when_small_and_by_size_and_time_when_large(tmp_path):
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("one")
    large.write_bytes(b"x" * (demo.SMALL_FILE + 1))
    def fingerprint() -> str:
        return demo.source([str(small), str(large)])["content"]

    before = fingerprint()
    os.utime(small, ns=(1, 1))  # touched, same content: the same
    assert fingerprint() == before
    small.write_text("two")
    assert (edited := fingerprint()) != before
    os.utime(large, ns=(2, 2))  # a large file is not read: its modification time counts
    assert fingerprint() != edited
    folder = demo.source([str(tmp_path)])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dev.tsv").write_text("a\tb\n")
    assert demo.source([str(tmp_path)]) != folder


def test_auto_data_sticks_to_the_earlier_run_and_never_drops_a_real_data_run(tmp_path, capsys):
    out = tmp_path / "demo"
    demo.Stage("tokenizer", out / "tokenizer", {"data": "local", "text": {"paths": ["/data/wiki.train.tokens"]}}).ensure(
        Builder(out / "tokenizer"))
    with pytest.raises(SystemExit) as stopped:
        demo.main(["--output_dir", str(out)])
    assert "holds a run on your own data (--text_files /data/wiki.train.tokens); pass the same --text_files" in str(stopped.value)
    assert (out / "tokenizer.stage.json").is_file()  # nothing was touched
    args = demo.parse_args(["--output_dir", str(out)])
    assert demo.auto_mode(args, {"data": "offline"}) == "offline"  # kept, without asking the network
    assert "--data auto: offline data, as the earlier run" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--text_files", "a.txt"], "real data needs both --text_files and --glue_dir"),
    (["--glue_dir", "glue"], "real data needs both --text_files and --glue_dir"),
    (["--job_threads", "0"], "--job_threads must be at least 1"),
    (["--text_files", "no/such.txt", "--glue_dir", "."], "--text_files: no/such.txt is not a file"),
    (["--text_files", __file__, "--glue_dir", "no/glue"], "--glue_dir: no/glue is not a folder"),
])
def test_demo_flag_mistakes_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        demo.parse_args(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_job_threads_reach_the_search(tmp_path):
    args = demo.parse_args(["--job_threads", "3"])
    data = {"tasks": ["cola"], "glue_dir": None}
    argv = demo.search_argv(args, tmp_path, tmp_path / "library.json", data, tmp_path / "tok", tmp_path / "ds")
    assert argv[argv.index("--job_threads") + 1] == "3"
    assert "--job_threads" not in demo.search_argv(demo.parse_args([]), tmp_path, tmp_path / "l.json", data, tmp_path, tmp_path)


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in Journal(run_dir).read(repair=False) if e["event"] == kind]


@pytest.mark.slow
def test_real_data_into_an_offline_demo_folder_rebuilds_from_the_data_on(tmp_path, capsys):
    """The issue's case: the offline demo, then the same folder with --text_files/--glue_dir. Every step is rebuilt on the
    real data, the console says what changed, and the search does not reuse the offline models."""
    out = tmp_path / "demo"
    demo.main(["--output_dir", str(out), *TINY])
    real = tmp_path / "real"
    shutil.copytree(out / "data" / "glue", real / "glue")
    lines = (out / "data" / "corpus" / "train.txt").read_text().splitlines()
    (real / "text.txt").write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    capsys.readouterr()

    argv = ["--output_dir", str(out), *TINY[2:], "--text_files", str(real / "text.txt"), "--glue_dir", str(real / "glue"),
            "--glue_tasks", "cola", "rte", "--data", "auto"]
    second = demo.main(argv)
    printed = capsys.readouterr().out
    assert f"using real data: text {real / 'text.txt'}" in printed
    assert 'tokenizer: rebuilding' in printed and 'data: was "offline", now "local"' in printed
    assert "pretraining data: rebuilding" in printed and "tokenizer changed" in printed
    assert "search: rebuilding" in printed and "next-level library: rebuilding" in printed
    tokenizer = json.loads((out / "tokenizer.stage.json").read_text())
    assert tokenizer["inputs"]["text"]["paths"] == [str(real / "text.txt")]
    job_config = json.loads((out / "search" / "job_config.json").read_text())
    assert str(real / "glue") in job_config["finetune_args"]
    assert len(events(out / "search", "run")) == 1 and len(second["state"].finished) == 1  # a new search, not the offline one
    assert not (out / "search" / "models").exists() or len(list((out / "search" / "models").iterdir())) == 1

    demo.main(argv)  # the same command again: everything kept, nothing trained
    printed = capsys.readouterr().out
    assert "rebuilding" not in printed and "next-level library: kept" in printed


@pytest.mark.slow
def test_an_interrupted_search_is_resumed_before_the_next_level_is_built(tmp_path, capsys):
    """Ctrl-C during the search: no next level from the partial search and a non-zero exit; the same command resumes the
    search (nothing finished is trained again) and then builds the next level; a larger budget rebuilds it."""
    out = tmp_path / "demo"
    argv = ["--output_dir", str(out), *TINY[:2], "--budget", "2", *TINY[4:]]
    demo_process = subprocess.Popen([sys.executable, "-m", "flexibert.demo", *argv], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not ((out / "search" / "journal.jsonl").is_file() and len(events(out / "search", "submit")) >= 2):
        assert demo_process.poll() is None and time.time() < deadline, "the demo ended before its second model started"
        time.sleep(0.5)
    demo_process.send_signal(signal.SIGINT)
    _, stderr = demo_process.communicate(timeout=120)
    assert demo_process.returncode == demo.INTERRUPTED, stderr
    assert "re-run the same command to resume the search" in stderr and "Traceback" not in stderr
    assert not (out / "library_level2.json").exists()
    first_model = events(out / "search", "finish")[0]["model_hash"]

    result = demo.main(argv)
    printed = capsys.readouterr().out
    assert "search: kept" in printed and "resuming" in printed
    assert len(result["state"].finished) == 2 and Library.load(result["next_library"]).metadata["hierarchy_level"] == 2
    assert len(list((out / "search" / "models" / first_model / "starts").iterdir())) == 1  # not trained again

    demo.main([*argv[:4], "--budget", "3", *argv[6:]])
    printed = capsys.readouterr().out
    assert "search: kept" in printed and "next-level library: rebuilding" in printed and "search results: was" in printed
