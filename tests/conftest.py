"""Fixtures shared by all tests."""

import contextlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings.library import Library
from flexibert.search.benchmarks import benchmark_index


@pytest.fixture
def rng():
    return random.Random(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread; several OpenMP threads oversubscribe small shared CI machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NASBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench_bert" / "nasbench_bert_glue.json"


@pytest.fixture(scope="session")
def nasbench(tmp_path_factory) -> dict:
    """NAS-Bench-BERT: its file, the library of its 491 distinct architectures (embeddings, neighbours) and their mean scores.

    Skips the test when ../shared/data is missing.
    """
    if not NASBENCH.is_file():
        pytest.skip(f"NAS-Bench-BERT not found at {NASBENCH} (../shared/data)")
    work = tmp_path_factory.mktemp("nasbench")
    entries = json.loads(NASBENCH.read_text())["entries"]
    with contextlib.redirect_stdout(io.StringIO()):
        library = Library.from_model_dicts([e["model_dict"] for e in entries])
        library.build_embeddings(num_neighbors=30, seed=0)
    library.save(work / "library.json")
    scores = np.array([s["glue"] for s in benchmark_index(NASBENCH)[0].values()])
    return {"file": NASBENCH, "library": work / "library.json", "scores": scores, "work": work}


@pytest.fixture
def nasbench_search(nasbench):
    """A real search on NAS-Bench-BERT lookups (inline executor, 5 random initial models); the state gets its console text."""
    from flexibert import run_boshnas

    def search(run_dir: Path, *flags: str):
        with contextlib.redirect_stdout(io.StringIO()) as console:
            state = run_boshnas.main(["--dataset_file", str(nasbench["library"]), "--benchmark_file", str(nasbench["file"]),
                                      "--executor", "inline", "--run_dir", str(run_dir), "--num_init", "5", *flags])
        state.console = console.getvalue()
        return state

    return search


WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


@pytest.fixture(scope="session")
def tiny_pretraining_inputs():
    """A maker of real pretraining inputs: the first ``lines`` of WikiText-2 train, a BPE tokenizer of ``vocab_size``
    trained on them, and the corpus prepared at ``seq`` tokens; returns {"corpus", "tokenizer", "dataset"} paths."""
    from flexibert import prepare_pretrain_dataset, save_roberta_tokenizer

    def make(work: Path, lines: int, vocab_size: int, seq: int) -> dict[str, Path]:
        corpus = work / "wiki.train.slice.tokens"
        corpus.write_text("".join((WIKITEXT / "wiki.train.tokens").read_text(encoding="utf-8").splitlines(keepends=True)[:lines]),
                          encoding="utf-8")
        tokenizer = work / "tokenizer"
        save_roberta_tokenizer.main(["--train_files", str(corpus), "--vocab_size", str(vocab_size), "--output_dir", str(tokenizer)])
        prepare_pretrain_dataset.main(["--text_files", str(corpus), "--tokenizer", str(work / "tokenizer"), "--max_seq_length", str(seq),
                                       "--cache_dir", str(work / "hf_cache"), "--output_dir", str(work / "dataset")])
        return {"corpus": corpus, "tokenizer": work / "tokenizer", "dataset": work / "dataset"}

    return make


@pytest.fixture(scope="module")
def pretraining_inputs(request, tmp_path_factory, tiny_pretraining_inputs) -> dict[str, Path]:
    """The test module's tiny pretraining inputs, sized by its ``PRETRAINING_INPUTS = (lines, vocab_size, seq)``."""
    lines, vocab_size, seq = request.module.PRETRAINING_INPUTS
    return tiny_pretraining_inputs(tmp_path_factory.mktemp("pretraining_inputs"), lines, vocab_size, seq)


@pytest.fixture(scope="module")
def corpus(pretraining_inputs) -> Path:
    return pretraining_inputs["corpus"]


@pytest.fixture(scope="module")
def tokenizer_dir(pretraining_inputs) -> Path:
    return pretraining_inputs["tokenizer"]


@pytest.fixture(scope="module")
def dataset_dir(pretraining_inputs) -> Path:
    return pretraining_inputs["dataset"]
