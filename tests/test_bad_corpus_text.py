"""Corpus text that cannot be prepared (empty, blank, binary, too short) stops with one line that says what to fix (issue 17).

Real files and a real tokenizer trained here on WikiText-2: each bad case exits non-zero with one ``error:`` line naming the
file or the split and the fix, no traceback, and no output folder; the file checks come before the tokenizer is even loaded.
"""

import socket
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import huggingface_hub.constants
import pytest

from flexibert import prepare_pretrain_dataset, save_roberta_tokenizer
from flexibert.data import hub

WIKITEXT = Path("/work/shared/data/wikitext-2/wiki.train.tokens")
ROOT = Path(__file__).resolve().parents[1]
FILE_FIX = "give plain-text files of your corpus in UTF-8 (convert other encodings first) and leave out empty ones"

pytestmark = pytest.mark.skipif(not WIKITEXT.is_file(), reason="needs WikiText-2 in /work/shared/data")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 400 lines of WikiText-2 (blank lines and headings included, as in the real file)."""
    path = tmp_path_factory.mktemp("corpus") / "wiki.txt"
    with WIKITEXT.open(encoding="utf-8") as lines:
        path.write_text("".join(islice(lines, 400)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory) -> Path:
    """A small byte-level BPE trained by the real script on ``corpus``."""
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "500", "--output_dir", str(folder)])
    return folder


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind that holds no usable text."""
    root = tmp_path_factory.mktemp("bad")
    contents = {"empty.txt": b"", "blank.txt": b"   \n\n  \n", "binary.dat": Path(sys.executable).read_bytes()[:3000],
                "latin1.txt": "café au lait\n".encode("latin-1"), "utf16.txt": "hello\n".encode("utf-16")}
    for name, data in contents.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in contents}


def prepare_error(tmp_path: Path, *argv: str) -> str:
    """The one error line ``prepare_pretrain_dataset`` exits with; asserts that it wrote nothing (not even the output's parent)."""
    output = tmp_path / "out" / "prepared"
    with pytest.raises(SystemExit) as exit_info:
        prepare_pretrain_dataset.main([*argv, "--output_dir", str(output)])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert not output.parent.exists()
    return message


@pytest.mark.parametrize(("name", "problem"), [
    ("empty.txt", "empty.txt is empty"),
    ("blank.txt", "blank.txt holds only whitespace"),
    ("binary.dat", "binary.dat is binary, not text (a NUL byte at byte "),
    ("latin1.txt", "latin1.txt is binary or not UTF-8 text (an invalid byte at byte 3)"),
    ("utf16.txt", "utf16.txt is binary, not text (a NUL byte at byte 3)"),
])
def test_a_file_without_text_is_refused_on_one_line(tmp_path, tokenizer, bad_files, name, problem):
    message = prepare_error(tmp_path, "--text_files", str(bad_files[name]), "--tokenizer", str(tokenizer), "--max_seq_length", "64")
    assert str(bad_files[name].parent / problem) in message and message.endswith(FILE_FIX)


def test_every_bad_file_is_named_and_good_ones_do_not_hide_them(tmp_path, tokenizer, bad_files, corpus):
    files = [str(corpus), str(bad_files["empty.txt"]), str(bad_files["binary.dat"]), str(tmp_path / "missing.txt")]
    message = prepare_error(tmp_path, "--text_files", *files, "--tokenizer", str(tokenizer))
    assert message == f"error: --text_files not found: {files[3]}; check the paths of your corpus's text files"
    message = prepare_error(tmp_path, "--text_files", *files[:3], "--tokenizer", str(tokenizer))
    assert "empty.txt is empty" in message and "binary.dat is binary" in message and "wiki.txt" not in message


def test_files_are_checked_before_the_tokenizer_is_loaded(tmp_path, bad_files):
    message = prepare_error(tmp_path, "--text_files", str(bad_files["blank.txt"]), "--tokenizer", str(tmp_path / "no_tokenizer"))
    assert "blank.txt holds only whitespace" in message


def test_only_blank_rows_kept_by_max_samples(tmp_path, tokenizer, corpus):
    """WikiText starts with a blank line: one row of it holds nothing to tokenise."""
    message = prepare_error(tmp_path, "--text_files", str(corpus), "--tokenizer", str(tokenizer), "--max_samples", "1")
    assert message == (f"error: nothing to prepare: {corpus} give only blank lines (1 row read, --max_samples 1); "
                       "give more text (or a larger --max_samples)")


def test_a_split_without_text(tmp_path, tokenizer):
    three = tmp_path / "three.txt"
    three.write_text("The first line of text .\nThe second line .\nThe third line .\n")
    message = prepare_error(tmp_path, "--text_files", str(three), "--tokenizer", str(tokenizer))
    assert message == (f"error: the validation split gets no text: --validation_fraction 0.05 puts none of the 3 rows of {three} "
                       "in it; give more text or pass a larger --validation_fraction")


@pytest.mark.parametrize(("split", "fraction", "fix"), [("train", "0.9", "a smaller"), ("validation", "0.05", "a larger")])
def test_a_corpus_too_short_for_one_sequence(tmp_path, tokenizer, corpus, split, fraction, fix):
    message = prepare_error(tmp_path, "--text_files", str(corpus), "--tokenizer", str(tokenizer), "--max_samples", "40",
                            "--validation_fraction", fraction, "--max_seq_length", "2048")
    assert message.startswith(f"error: the {split} split (")
    assert message.endswith(f"rows) has no complete 2048-token sequence; give more text (or a larger --max_samples), "
                            f"pass a smaller --max_seq_length or {fix} --validation_fraction")


def test_small_batches_name_batch_size_as_a_fix(tmp_path, tokenizer, corpus):
    """Short lines, one per batch: each batch's single partial sequence is dropped, though together they would fill many."""
    words = corpus.read_text(encoding="utf-8").split()[:2000]
    short = tmp_path / "short_lines.txt"
    short.write_text("".join(" ".join(words[i:i + 5]) + "\n" for i in range(0, len(words), 5)), encoding="utf-8")
    message = prepare_error(tmp_path, "--text_files", str(short), "--tokenizer", str(tokenizer), "--max_seq_length", "64",
                            "--batch_size", "1")
    assert message.endswith("or a larger --batch_size (each batch of 1 row drops its last partial sequence)")


def test_batches_of_blank_lines_pack_to_nothing_instead_of_failing(tmp_path, tokenizer, corpus):
    """With --batch_size 1 WikiText's blank lines are whole batches: the packer skips them, the other lines pack as usual."""
    packed = prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(tokenizer), "--max_samples", "100",
                                            "--max_seq_length", "16", "--batch_size", "1", "--output_dir", str(tmp_path / "out")])
    assert len(packed["train"]) > 0 and len(packed["validation"]) > 0
    assert (tmp_path / "out" / "dataset_dict.json").is_file()


def test_the_script_prints_one_line_and_no_traceback(tmp_path, tokenizer, bad_files):
    """The issue's command, run as a process: exit status 1, one line on stderr, no output folder."""
    output = tmp_path / "prepared"
    result = subprocess.run([sys.executable, "-m", "flexibert.prepare_pretrain_dataset", "--text_files", str(bad_files["blank.txt"]),
                             "--tokenizer", str(tokenizer), "--max_seq_length", "64", "--output_dir", str(output)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: --text_files cannot be prepared: {bad_files['blank.txt']} holds only "
                                                  f"whitespace; {FILE_FIX}"]
    assert not output.exists()


@pytest.mark.parametrize("name", ["empty.txt", "blank.txt", "binary.dat", "latin1.txt"])
def test_the_tokenizer_script_refuses_the_same_files(tmp_path, bad_files, name):
    output = tmp_path / "tok"
    with pytest.raises(SystemExit) as exit_info:
        save_roberta_tokenizer.main(["--train_files", str(bad_files[name]), "--output_dir", str(output)])
    message = exit_info.value.code
    assert message.startswith(f"error: --train_files cannot train a tokenizer: {bad_files[name]} ") and "\n" not in message
    assert not output.exists()


def test_a_tokenizer_needs_more_than_a_few_bytes(tmp_path):
    """The issue's 'saved (vocab 261)': text too short for any merge is refused, not saved as a bytes-only tokenizer."""
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a\n")
    with pytest.raises(SystemExit, match=r"too little text to learn any BPE merge .*vocab 261"):
        save_roberta_tokenizer.main(["--train_files", str(tiny), "--output_dir", str(tmp_path / "tok")])
    assert not (tmp_path / "tok").exists()


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The hub endpoint as a local port that refuses connections (a real probe, answered at once), offline variables unset."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hub, "_verdicts", {})


def test_a_hub_dataset_that_cannot_be_had_fails_fast(tmp_path, tokenizer, unreachable_hub):
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        prepare_pretrain_dataset.main(["--hub_datasets", "no_such_owner/no_such_corpus", "--tokenizer", str(tokenizer),
                                       "--output_dir", str(tmp_path / "prepared")])
    assert time.monotonic() - started < 5
    message = exit_info.value.code
    assert message.startswith("error: cannot load hub corpus 'no_such_owner/no_such_corpus'") and "is not reachable" in message
    assert "--text_files FILE" in message
    assert not (tmp_path / "prepared").exists()
