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
