"""Broken inputs end in one clear line naming the file, what is wrong and the fix, never a traceback or a partial output:
library files (Library.load, and run_boshnas that opens one), search journals (a resumed run_boshnas) and
generate_library's flags and paths."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embeddings import generate_library
from embeddings.design_space import load_design_space
from embeddings.library import Library, LibraryFileError
from flexibert import run_boshnas
from flexibert.search.benchmarks import synthetic_scores
from flexibert.search.journal import Journal, RunDirError

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "design_space" / "design_space_tiny.yaml"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny space's 12 models with 4-d embeddings and 3 neighbours, their synthetic benchmark, and a finished 3-model search."""
    work = tmp_path_factory.mktemp("tiny")
    library = Library.from_design_space(load_design_space(TINY_SPACE), layers_per_stack=2)
    library.build_embeddings(embedding_size=4, num_neighbors=3, seed=0)
    library.save(work / "library.json")
    (work / "benchmark.json").write_text(json.dumps({"entries": synthetic_scores(library, seed=0)}))
    files = {"library": work / "library.json", "benchmark": work / "benchmark.json", "run": work / "run"}
    with contextlib.redirect_stdout(io.StringIO()):
        search(files, files["run"])
    return files


def search(files: dict[str, Path], run_dir: Path, library: Path | None = None):
    return run_boshnas.main(["--dataset_file", str(library or files["library"]), "--benchmark_file", str(files["benchmark"]),
                             "--executor", "inline", "--run_dir", str(run_dir), "--strategy", "random", "--budget", "3",
                             "--num_init", "2", "--seed", "0"])


def one_clear_line(message: str, *parts: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# Library files -------------------------------------------------------------------------------------------------------

def _ragged_row(data: dict) -> None:
    data["embeddings"][5] = data["embeddings"][5][:3]


def _set(key: str, value):
    def edit(data: dict) -> None:
        data[key] = value
    return edit


def _set_metadata(key: str, value):
    def edit(data: dict) -> None:
        data["metadata"][key] = value
    return edit


def _shorten(column: str, by: int = 1):
    def edit(data: dict) -> None:
        data[column] = data[column][:-by] if by > 0 else data[column] + data[column][:-by]
    return edit


def _neighbor(value):
    def edit(data: dict) -> None:
        data["neighbors"][2][0] = value
    return edit


LIBRARY_EDITS = {
    "format_version_string": (_set_metadata("format_version", "1"), "field 'metadata.format_version' is \"1\" (a string)"),
    "format_version_list": (_set_metadata("format_version", [1]), "field 'metadata.format_version' is [1] (an array)"),
    "metadata_list": (_set("metadata", [{"format_version": 1}]), "field 'metadata' is an array, not an object"),
    "fewer_hashes": (_shorten("hashes"), "column 'hashes' has 11 entries, 'model_dicts' has 12"),
    "fewer_embeddings": (_shorten("embeddings", 2), "column 'embeddings' has 10 entries, 'model_dicts' has 12"),
    "more_performances": (_set("performances", [None] * 13), "column 'performances' has 13 entries, 'model_dicts' has 12"),
    "fewer_neighbors": (_shorten("neighbors"), "column 'neighbors' has 11 entries, 'model_dicts' has 12"),
    "ragged_embeddings": (_ragged_row, "column 'embeddings' entry 5 has 3 values but entry 0 has 4"),
    "hashes_not_a_list": (_set("hashes", "abc"), "column 'hashes' is a string, not an array"),
    "unknown_neighbor": (_neighbor("f" * 64), f"column 'neighbors' names \"{'f' * 64}\", which is not a model hash"),
    "nan_embedding": (lambda data: data["embeddings"][7].__setitem__(1, float("nan")), "column 'embeddings' entry 7 holds NaN"),
    "string_performance": (lambda data: data["performances"].__setitem__(4, "high"), "column 'performances' entry 4 is a string"),
}


@pytest.mark.parametrize("case", LIBRARY_EDITS)
def test_a_broken_library_names_the_file_and_the_field(tiny, tmp_path, case: str) -> None:
    edit, problem = LIBRARY_EDITS[case]
    data = json.loads(tiny["library"].read_text())
    edit(data)
    path = tmp_path / "lib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LibraryFileError) as raised:
        Library.load(path)
    one_clear_line(str(raised.value), str(path), problem, "rebuild it with embeddings/generate_library.py --overwrite")
    assert sorted(tmp_path.iterdir()) == [path]  # nothing written beside it


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text at byte offset 0 (binary or corrupted content)"),
        (b'{"model_dicts": [{"l": 2}], "hashes": ["\xe9\xff"]}', "not UTF-8 text at byte offset 40"),
        (None, "not valid JSON"),  # the real library cut in the middle
    ],
    ids=["binary", "latin1_bytes", "truncated"],
)
def test_binary_or_truncated_library_files_name_the_file(tiny, tmp_path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "lib.json"
    path.write_bytes(content if content is not None else tiny["library"].read_bytes()[:5000])
    with pytest.raises(LibraryFileError) as raised:
        Library.load(path)
    one_clear_line(str(raised.value), str(path), problem, "--overwrite")
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_search_on_a_broken_library_stops_with_one_line_and_creates_no_run_folder(tiny, tmp_path) -> None:
    data = json.loads(tiny["library"].read_text())
    data["embeddings"][3] = data["embeddings"][3] + [0.5]
    path = tmp_path / "lib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as stopped:
        search(tiny, tmp_path / "run", library=path)
    one_clear_line(str(stopped.value.code), "error: ", str(path), "column 'embeddings' entry 3 has 5 values but entry 0 has 4")
    assert not (tmp_path / "run").exists()


# Journals ----------------------------------------------------------------------------------------------------------

def _hash_of_first_finish(lines: list[bytes]) -> str:
    return next(json.loads(line)["model_hash"] for line in lines if json.loads(line)["event"] == "finish")


JOURNAL_EDITS = {
    # name: (lines -> lines, where the bad line ends up (None: appended), what the message says)
    "no_event_field": (lambda lines: [*lines, b'{"time": 1.0, "model_hash": "abc"}'], None, "the line has no 'event' field"),
    "finish_for_an_unknown_hash": (
        lambda lines: [*lines, json.dumps({"event": "finish", "model_hash": "0" * 64, "score": 50.0}).encode()], None,
        f"the 'finish' event names model '{'0' * 64}', which no earlier 'round' event proposed"),
    "binary_bytes": (lambda lines: [*lines, b"\xff\xfe\x00\x01garbage"], None, "byte 1 of the line is not UTF-8 text (binary data)"),
    "json_array": (lambda lines: [*lines, b"[1, 2, 3]"], None, "the line is an array, not a journal event"),
    "json_string_in_the_middle": (lambda lines: [lines[0], b'"round"', *lines[1:]], 2, "the line is a string, not a journal event"),
    "launch_before_submit": (
        lambda lines: [lines[0], lines[1], json.dumps({"event": "launched", "model_hash": _first_proposal(lines[1]),
                                                       "job_id": "7"}).encode(), *lines[2:]], 3,
        "which no earlier 'submit' event submitted"),
    "screen_with_a_bad_round": (
        lambda lines: [*lines, json.dumps({"event": "screen", "model_hash": "0" * 64, "allowed": False, "round": "x",
                                           "attempt": 0}).encode()], None,
        "the 'screen' event needs a whole-number 'round' and 'attempt'"),
    "finish_without_score": (
        lambda lines: [*lines, json.dumps({"event": "finish", "model_hash": _hash_of_first_finish(lines)}).encode()], None,
        "the 'finish' event has no 'score' field"),
}


def _first_proposal(round_line: bytes) -> str:
    return json.loads(round_line)["proposals"][0]["model_hash"]


@pytest.mark.parametrize("case", JOURNAL_EDITS)
def test_a_broken_journal_names_the_file_the_line_and_the_problem(tiny, tmp_path, case: str) -> None:
    edit, line_number, problem = JOURNAL_EDITS[case]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny["run"], run_dir)
    journal = Journal(run_dir)
    lines = journal.path.read_bytes().splitlines()
    assert json.loads(lines[1])["event"] == "round"
    broken = b"\n".join(edit(lines)) + b"\n"
    journal.path.write_bytes(broken)
    line_number = line_number or len(lines) + 1
    before = {path.relative_to(run_dir): path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.name != ".lock"}

    with pytest.raises(RunDirError) as raised:
        journal.read(repair=False)
    one_clear_line(str(raised.value), f"{journal.path}:{line_number}: ", problem, "start a new --run_dir")
    with pytest.raises(SystemExit) as stopped:  # the resumed search: one line, and the run folder is left as it was
        search(tiny, run_dir)
    one_clear_line(str(stopped.value.code), f"error: {journal.path}:{line_number}: ", problem)
    assert journal.path.read_bytes() == broken
    assert {path.relative_to(run_dir): path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.name != ".lock"} == before


def test_an_unterminated_last_line_is_still_dropped_even_when_binary(tiny, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny["run"], run_dir)
    journal = Journal(run_dir)
    complete = journal.path.read_bytes()
    journal.path.write_bytes(complete + b'{"event": "fin\xff')  # a kill in the middle of a line
    events = journal.read(repair=False)
    assert events[-1]["event"] == "stop" and journal.path.read_bytes() == complete + b'{"event": "fin\xff'
    assert journal.read() == events and journal.path.read_bytes() == complete


# generate_library ----------------------------------------------------------------------------------------------------

def _generate(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of generate_library (an argparse error exits; a build error returns 2)."""
    try:
        status = generate_library.main(["--design_space_file", str(TINY_SPACE), "--num_neighbors", "3", *argv])
    except SystemExit as stopped:
        status = stopped.code
    return status, capsys.readouterr().err


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_generate_refuses_an_output_that_is_a_folder(tmp_path, capsys) -> None:
    folder = tmp_path / "libraries"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        status, err = _generate(["--dataset_file", str(folder), *extra], capsys)
        assert status == 2
        one_clear_line(_error_line(err), f"--dataset_file {folder}: is a folder", str(folder / "library.json"))
    assert list(tmp_path.rglob("*")) == [folder] and not list(folder.iterdir())


def test_generate_refuses_an_output_under_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    output = blocker / "sub" / "library.json"
    status, err = _generate(["--dataset_file", str(output)], capsys)
    assert status == 2
    one_clear_line(_error_line(err), f"--dataset_file {output}: {blocker} is a file, not a folder")
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == "a file, not a folder\n"


def test_generate_refuses_a_missing_dissimilarity_matrix(tmp_path, capsys) -> None:
    output = tmp_path / "lib.json"
    status, err = _generate(["--dataset_file", str(output), "--diss_mat_file", str(tmp_path / "missing.npy")], capsys)
    assert status == 2
    one_clear_line(_error_line(err), f"--diss_mat_file {tmp_path / 'missing.npy'}: no such file", "numpy.save")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not a matrix\n", "does not start with numpy's .npy header"),
        (np.zeros((12, 11)), "must be N x N, got shape (12, 11)"),
        (np.full((12, 12), np.nan), "holds NaN, infinite or negative dissimilarities"),
    ],
    ids=["text", "not_square", "nan"],
)
def test_generate_refuses_a_bad_dissimilarity_matrix(tmp_path, capsys, content, problem: str) -> None:
    matrix = tmp_path / "m.npy"
    if isinstance(content, str):
        matrix.write_text(content)
    else:
        np.save(matrix, content)
    status, err = _generate(["--dataset_file", str(tmp_path / "lib.json"), "--diss_mat_file", str(matrix)], capsys)
    assert status == 2
    one_clear_line(_error_line(err), f"--diss_mat_file {matrix}: ", problem)
    assert list(tmp_path.iterdir()) == [matrix]


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--embedding_size", "0", "argument --embedding_size: must be at least 1, got 0"),
        ("--embedding_size", "-2", "argument --embedding_size: must be at least 1, got -2"),
        ("--num_neighbors", "0", "argument --num_neighbors: must be at least 1, got 0"),
        ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
        ("--n_jobs", "0", "argument --n_jobs: must be at least 1, got 0"),
        ("--layers_per_stack", "0", "argument --layers_per_stack: must be at least 1, got 0"),
        ("--embedding_size", "4.5", "argument --embedding_size: expected a whole number, got '4.5'"),
    ],
)
def test_generate_refuses_nonsense_numbers(tmp_path, capsys, flag: str, value: str, problem: str) -> None:
    status, err = _generate(["--dataset_file", str(tmp_path / "lib.json"), flag, value], capsys)
    assert status == 2
    one_clear_line(_error_line(err), problem)
    assert not list(tmp_path.iterdir())


def test_generate_cli_prints_one_error_line_and_no_traceback(tmp_path) -> None:
    output = tmp_path / "lib.json"
    done = subprocess.run([sys.executable, "-m", "embeddings.generate_library", "--design_space_file", str(TINY_SPACE),
                           "--dataset_file", str(output), "--embedding_size", "0"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert _error_line(done.stderr) == "generate_library.py: error: argument --embedding_size: must be at least 1, got 0"
    assert not output.exists()
