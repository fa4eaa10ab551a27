"""A search that really trains: two tiny models through the local executor, the second warm-started from the first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoTokenizer

from embeddings.library import Library
from flexibert import export_models, prepare_pretrain_dataset, run_boshnas, save_roberta_tokenizer
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.journal import Journal, SearchState
from flexibert.search.transfer import warm_start_steps

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED / "wikitext-2").is_dir() or not (SHARED / "glue").is_dir(),
                       reason=f"real WikiText-2 and GLUE not found in {SHARED} (the shared data folder beside the checkout)"),
]
SEQ = 64
# Three close relatives (they differ in one feed-forward width or one op parameter): each can start from another.
MODELS = [{"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[128], [128]], "p": ["sdp", "sdp"]},
          {"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[128], [256]], "p": ["sdp", "sdp"]},
          {"l": 2, "o": ["sa", "sa"], "h": [64, 64], "n": [2, 2], "f": [[256], [128]], "p": ["sdp", "sdp"]}]


@pytest.fixture(scope="module")
def training_inputs(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("search_training")
    lines = (SHARED / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").splitlines(keepends=True)[:1500]
    corpus = work / "corpus.txt"
    corpus.write_text("".join(lines), encoding="utf-8")
    save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", "1000", "--output_dir", str(work / "tokenizer")])
    prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(work / "tokenizer"), "--max_seq_length", str(SEQ),
                                   "--cache_dir", str(work / "hf_cache"), "--output_dir", str(work / "dataset")])
    library = Library.from_model_dicts(MODELS)
    library.build_embeddings(embedding_size=2, num_neighbors=2, seed=0)
    library.save(work / "library.json")
    return {"library": work / "library.json", "tokenizer": work / "tokenizer", "dataset": work / "dataset"}


def test_a_search_pretrains_fine_tunes_and_warm_starts_from_a_trained_neighbour(training_inputs, tmp_path):
    run_dir = tmp_path / "run"
    state = run_boshnas.main([
        "--dataset_file", str(training_inputs["library"]), "--run_dir", str(run_dir), "--executor", "local", "--poll_interval", "0.5",
        "--strategy", "random", "--num_init", "1", "--budget", "2", "--task", "rte", "--transfer_threshold", "0.5",
        "--tokenizer", str(training_inputs["tokenizer"]), "--pretrain_dataset_dir", str(training_inputs["dataset"]),
        "--glue_dir", str(SHARED / "glue"), "--pretrain_steps", "30",
        "--pretrain_args", f"--max_seq_length {SEQ} --per_device_train_batch_size 8 --warmup_steps 2 --learning_rate 1e-3 "
                           "--save_steps 10 --logging_steps 10",
        "--finetune_args", f"--max_train_samples 64 --max_eval_samples 64 --num_train_epochs 1 --max_seq_length {SEQ} "
                           "--per_device_train_batch_size 16 --learning_rate 1e-3"])
    first, second = state.finished
    assert state.candidates[first].neighbor is None and state.candidates[second].neighbor == first

    scratch = json.loads((run_dir / "models" / first / "pretrained" / "pretrain_results.json").read_text())
    warm = json.loads((run_dir / "models" / second / "pretrained" / "pretrain_results.json").read_text())
    assert scratch["global_step"] == 30 and scratch["init_from"] is None
    library = Library.load(training_inputs["library"])
    closeness = model_overlap(library.model_dict(second), library.model_dict(first))
    assert warm["closeness"] == pytest.approx(closeness) and closeness >= 0.5
    assert warm["global_step"] == warm_start_steps(closeness, 30) < 30  # the closeness rule decided the warm start's steps
    assert warm["init_from"] == str((run_dir / "models" / first / "pretrained").resolve())
    assert warm["transferred_fraction"] > 0.5
    records = {h: json.loads((run_dir / "models" / h / "results.json").read_text())["training"] for h in state.finished}
    assert records[first] == {"start": "scratch", "from": None, "closeness": None, "steps": 30, "budget_steps": 30,
                              "mlm_loss": scratch["eval_loss"]}
    assert records[second]["start"] == "warm" and records[second]["steps"] == warm["global_step"]
    assert state.candidates[second].training == records[second]  # journaled: the leaderboard and strategies read it from there
    assert "scratch, 30 steps" in (run_dir / "leaderboard.md").read_text()
    assert not list((run_dir / "models" / first / "pretrained").glob("checkpoint-*"))  # a finished model keeps no checkpoints

    for model_hash in state.finished:
        results = json.loads((run_dir / "models" / model_hash / "results.json").read_text())
        assert results["source"] == "training" and results["tasks"] == ["rte"]
        assert 0 <= results["glue_score"] <= 100 and results["glue_score"] == state.candidates[model_hash].score
        assert results["scores"]["rte"] == results["glue_score"]
    board = (run_dir / "leaderboard.csv").read_text()
    assert first in board and second in board
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[2].split(",")[5] == first  # the neighbour column of the second evaluation
    assert SearchState.replay(Journal(run_dir).read()).stopped == "budget"
    check_export(run_dir, state, tmp_path / "exported")


def check_export(run_dir: Path, state, output: Path) -> None:
    """The leaderboard points at each model's weights, and export_models makes loadable folders with cards."""
    board = (run_dir / "leaderboard.md").read_text()
    assert f"models/{state.finished[0]}/pretrained" in board and "flexibert.export_models" in board
    best = max(state.finished, key=lambda h: state.candidates[h].score)
    (path,) = export_models.main(["--run_dir", str(run_dir), "--top", "1", "--output_dir", str(output)])
    assert path == output / best[:12] and not list(path.glob("checkpoint-*")) and not (path / "trainer_state.json").exists()
    model = AutoModel.from_pretrained(path)
    assert model.config.model_dict == Library.load(json.loads((run_dir / "job_config.json").read_text())["library"]).model_dict(best)
    AutoTokenizer.from_pretrained(path)
    card = ModelCard.load(path / "README.md")
    values = {r.dataset_config or r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["glue_score"] == round(state.candidates[best].score, 4) and "rte" in values
    with pytest.raises(SystemExit, match="--overwrite"):
        export_models.main(["--run_dir", str(run_dir), "--output_dir", str(output)])
