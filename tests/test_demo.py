"""The quickstart demo end to end, at an even smaller setting than its defaults (same code path), on offline data."""

from __future__ import annotations

import csv
import json

import pytest

from embeddings.library import Library
from flexibert import demo
from flexibert.training.progress import read_progress


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_resumes(tmp_path, capsys):
    argv = ["--output_dir", str(tmp_path / "demo"), "--data", "offline", "--budget", "2", "--num_init", "1",
            "--pretrain_steps", "10", "--transfer_pretrain_steps", "5", "--train_samples", "64", "--eval_samples", "64",
            "--finetune_epochs", "1", "--vocab_size", "1000", "--max_seq_length", "32"]
    result = demo.main(argv)
    out = tmp_path / "demo"
    printed = capsys.readouterr().out
    assert f"output folder: {out}" in printed and "OFFLINE demo data made from Python's pydoc_data" in printed
    assert "top of the leaderboard" in printed

    search = out / "search"
    with open(search / "leaderboard.csv", newline="") as handle:
        board = list(csv.DictReader(handle))
    assert len(board) == 2 and all(0 <= float(row["score"]) <= 100 and int(row["parameters"]) > 0 for row in board)
    for plot in ("best_score.png", "score_vs_parameters.png", "library_map.png"):
        assert (search / "report" / plot).is_file()
    assert (out / "data" / "DATA.md").is_file() and (out / "tokenizer").is_dir() and (out / "pretrain_dataset").is_dir()
    finer = Library.load(result["next_library"])
    assert finer.metadata["hierarchy_level"] == 2 and len(finer) > 0

    for record in ("data", "tokenizer", "pretrain_dataset", "library.json", "search", "library_level2.json"):
        assert json.loads((out / f"{record}.stage.json").read_text())["inputs"]  # what each step was built from
    for model in (search / "models").iterdir():  # what the console showed while the jobs ran
        assert read_progress(model / "pretrained" / "progress.json")["done"]
        assert all(read_progress(model / "glue" / task / "progress.json")["done"] for task in ("cola", "rte"))
    capsys.readouterr()

    again = demo.main(argv)  # resumes: nothing is trained again
    assert again["state"].finished == result["state"].finished
    for model in (search / "models").iterdir():
        assert len(list((model / "starts").iterdir())) == 1
    printed = capsys.readouterr().out
    assert "rebuilding" not in printed
    assert all(f"{name}: kept" in printed for name in ("demo data", "tokenizer", "pretraining data", "graph library", "search",
                                                         "next-level library"))
