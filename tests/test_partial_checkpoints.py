"""A job killed while the Trainer writes a checkpoint: the re-run resumes from the newest complete one, or from scratch.

The Trainer writes ``checkpoint-N`` in place, so SLURM's kill after its grace time, or the OOM killer,
can leave the last one without trainer_state.json, with an empty optimizer.pt, or empty. A tiny real
pretraining (the one of test_pretraining.py, on real WikiText-2, a few steps) saves checkpoints; the
tests damage them as a kill does and re-run the same command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flexibert import pretrain_flexibert
from flexibert.training.checkpoints import _set_aside, checkpoint_problems, checkpoints_in, resumable_checkpoint, set_aside_in
from flexibert.training.settings import ConfigurationError

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
pytestmark = [pytest.mark.skipif(not (WIKITEXT / "wiki.train.tokens").is_file(),
                                 reason=f"real WikiText-2 not found at {WIKITEXT} (the shared data folder beside the checkout)"),
              pytest.mark.usefixtures("one_torch_thread")]

SEQ = 64
TINY = {"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[128], [128]], "p": ["sdp", "sdp"]}
STEPS = 6  # checkpoints every 2 steps; --save_total_limit 2 keeps checkpoint-4 and checkpoint-6
FINAL = ("model.safetensors", "pretrain_results.json", "trainer_state.json")  # what a finished run adds beside its checkpoints


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("partial_checkpoints")


@pytest.fixture(scope="module")
def argv(work, tiny_pretraining_inputs) -> list[str]:
    """The pretraining command on a small slice of WikiText-2: 8 sequences of 64 tokens per step, a checkpoint every 2 steps."""
    tiny_pretraining_inputs(work, 1200, 1000, SEQ)
    return ["--model_dict", json.dumps(TINY), "--tokenizer", str(work / "tokenizer"), "--dataset_dir", str(work / "dataset"),
            "--max_seq_length", str(SEQ), "--max_steps", str(STEPS), "--warmup_steps", "1", "--learning_rate", "1e-3",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "64", "--gradient_accumulation_steps", "1",
            "--save_steps", "2", "--logging_steps", "2", "--keep_checkpoints"]


@pytest.fixture(scope="module")
def finished(work, argv) -> Path:
    """A run of all STEPS steps: its output folder holds checkpoint-4 and checkpoint-6."""
    pretrain_flexibert.main([*argv, "--output_dir", str(work / "finished")])
    assert [path.name for path in checkpoints_in(work / "finished")] == ["checkpoint-4", "checkpoint-6"]
    return work / "finished"


def killed_copy(finished: Path, folder: Path) -> Path:
    """The finished run as if killed while saving its last checkpoint: without the final outputs."""
    shutil.copytree(finished, folder)
    for name in FINAL:
        (folder / name).unlink()
    return folder


def rerun(argv: list[str], output: Path, capsys) -> tuple[dict, str]:
    results = pretrain_flexibert.main([*argv, "--output_dir", str(output)])
    return results, capsys.readouterr().out


def losses(output: Path) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in json.loads((output / "trainer_state.json").read_text())["log_history"]
            if "loss" in entry}


def make_empty(checkpoint: Path) -> None:
    shutil.rmtree(checkpoint)
    checkpoint.mkdir()


DAMAGE = {
    "no trainer_state.json": lambda checkpoint: (checkpoint / "trainer_state.json").unlink(),
    "optimizer.pt is empty": lambda checkpoint: (checkpoint / "optimizer.pt").write_bytes(b""),
    "empty folder": make_empty,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_rerun_resumes_from_the_newest_complete_checkpoint(finished, argv, tmp_path, capsys, damage):
    output = killed_copy(finished, tmp_path / "killed")
    DAMAGE[damage](output / "checkpoint-6")

    results, out = rerun(argv, output, capsys)
    assert (f"incomplete checkpoint in {output} (a save cut short) moved aside: checkpoint-6 ({damage}) -> incomplete-checkpoint-6-"
            in out), out
    assert out.count("moved aside") == 1 and "; resuming from checkpoint-4\n" in out
    assert results["resumed_from_step"] == 4 and results["global_step"] == STEPS
    assert losses(output)[4] == losses(finished)[4], "steps 1-4 not redone"

    # The damaged folder is set aside as it was; the resumed run saved a whole checkpoint-6 in its place.
    [set_aside] = set_aside_in(output)
    assert set_aside.name.startswith("incomplete-checkpoint-6-") and checkpoint_problems(set_aside) == [damage]
    assert [path.name for path in checkpoints_in(output)] == ["checkpoint-4", "checkpoint-6"]
    assert checkpoint_problems(output / "checkpoint-6") == []
    assert json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == STEPS


def test_no_complete_checkpoint_trains_from_scratch(finished, argv, tmp_path, capsys):
    output = killed_copy(finished, tmp_path / "killed")
    (output / "checkpoint-6" / "trainer_state.json").unlink()
    (output / "checkpoint-4" / "optimizer.pt").write_bytes((output / "checkpoint-4" / "optimizer.pt").read_bytes()[:1000])

    results, out = rerun(argv, output, capsys)
    assert (f"incomplete checkpoints in {output} (a save cut short) moved aside: checkpoint-6 (no trainer_state.json) -> "
            "incomplete-checkpoint-6-") in out, out
    assert ", checkpoint-4 (optimizer.pt is cut short) -> incomplete-checkpoint-4-" in out
    assert "; no complete checkpoint left, training from scratch\n" in out and "resuming from" not in out
    assert results["resumed_from_step"] is None and results["global_step"] == STEPS
    assert losses(output) == pytest.approx(losses(finished)), "the same run again, from step 0"
    assert len(set_aside_in(output)) == 2


def test_another_models_checkpoint_is_refused_and_left_alone(finished, tmp_path, capsys):
    """The model check applies to the newest complete checkpoint; nothing is moved before it passes."""
    output = killed_copy(finished, tmp_path / "killed")
    (output / "checkpoint-6" / "scheduler.pt").unlink()
    with pytest.raises(ConfigurationError, match="checkpoint-4 is a checkpoint of a different model"):
        resumable_checkpoint(output, {**TINY, "n": [4, 4]})
    assert [path.name for path in checkpoints_in(output)] == ["checkpoint-4", "checkpoint-6"] and not set_aside_in(output)
    assert capsys.readouterr().out == ""


def test_a_second_process_finds_the_work_done_and_says_nothing(finished, tmp_path, capsys):
    """Under torchrun every process checks the same folder: the first moves the checkpoint aside and says so, the others agree silently."""
    output = killed_copy(finished, tmp_path / "killed")
    (output / "checkpoint-6" / "rng_state.pth").write_bytes(b"")
    assert resumable_checkpoint(output, TINY) == str(output / "checkpoint-4")
    assert "checkpoint-6 (rng_state.pth is empty)" in capsys.readouterr().out
    assert resumable_checkpoint(output, TINY) == str(output / "checkpoint-4")
    assert capsys.readouterr().out == ""
    assert len(set_aside_in(output)) == 1
    # One that looked at the folder before the rename, and renames after it: the folder is gone, nothing to report.
    assert _set_aside(output / "checkpoint-6", "later") is None


def test_cut_short_weights_and_state_are_incomplete(finished, tmp_path):
    """Files present and not empty but cut short while written: the weights, the trainer state."""
    checkpoint = tmp_path / "checkpoint-6"
    shutil.copytree(finished / "checkpoint-6", checkpoint)
    assert checkpoint_problems(checkpoint) == []
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    state = checkpoint / "trainer_state.json"
    state.write_text(state.read_text()[:50])
    assert checkpoint_problems(checkpoint) == ["trainer_state.json is cut short", "model.safetensors is cut short"]
    weights.unlink()
    assert checkpoint_problems(checkpoint)[-1] == "no model.safetensors or pytorch_model.bin"
