"""Without the Hugging Face hub, every stage that would download fails at once with its offline hint (flexibert/data/hub.py).

Before the probe, the hub clients retried for 28-50 s. These tests run the real scripts: against the real hub
endpoint when this machine cannot reach it (the CI machines have no internet), else against a local port
that refuses connections; and against small local servers that count what reaches them.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flexibert.data import hub
from flexibert.data.tokenization import train_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 15  # the old retries took 28-50 s; a script here takes ~5 s, mostly importing transformers
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
RTE_ROWS = [("It rains in the city today.", "The city is wet.", "entailment"),
            ("The cat sleeps on the mat all day.", "The dog barks loudly.", "not_entailment")] * 4


class CountingHub:
    """A local HTTP server standing in for a reachable hub: it answers 404 to everything and counts the requests."""

    def __init__(self):
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                owner.requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET = do_POST = _answer

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_hub():
    server = CountingHub()
    yield server
    server.close()


@pytest.fixture
def silent_hub():
    """A port that accepts connections (the kernel completes them) but never answers: a hung hub or a black-holing firewall."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def refused_url() -> str:
    """A local port nobody listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def offline_endpoint() -> dict:
    """The environment of an unreachable hub: the real one when this machine is offline, else a refused local port."""
    return {} if hub.unreachable_reason() is not None else {"HF_ENDPOINT": refused_url()}


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> dict:
    """A tokenizer folder trained here and a GLUE folder with a tiny RTE task: local files only."""
    root = tmp_path_factory.mktemp("local")
    text = root / "corpus.txt"
    text.write_text("\n".join(f"{a} {b}" for a, b, _ in RTE_ROWS * 20) + "\n")
    train_bpe_tokenizer([text], root / "tokenizer", vocab_size=300, min_frequency=1)
    (root / "glue" / "RTE").mkdir(parents=True)
    for split in ("train", "dev"):
        lines = ["index\tsentence1\tsentence2\tlabel", *(f"{i}\t{a}\t{b}\t{label}" for i, (a, b, label) in enumerate(RTE_ROWS))]
        (root / "glue" / "RTE" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return {"tokenizer": root / "tokenizer", "glue": root / "glue"}


def run(cwd: Path, *argv: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run a script with an empty HF cache and no offline variables unless ``env`` sets them; returns it and its seconds."""
    clean = {k: v for k, v in os.environ.items() if k not in (*OFFLINE_VARIABLES, "HF_ENDPOINT")}
    clean.update(HF_HOME=str(cwd / "hf_home"), **(env or {}))
    started = time.monotonic()
    result = subprocess.run([sys.executable, *argv], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


def assert_fails_at_once(result: subprocess.CompletedProcess, seconds: float, *hints: str) -> None:
    assert result.returncode != 0, result.stdout
    assert seconds < HANG_GUARD_S, f"took {seconds:.0f} s: the hub clients' retries are back"
    assert "Traceback" not in result.stderr, result.stderr
    for hint in hints:
        assert hint in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "hints"), [
    ([str(ROOT / "flexibert/save_roberta_tokenizer.py"), "--output_dir", "tok"], ["is not reachable", "--train_files FILE"]),
    (["-m", "flexibert.load_all_glue_datasets", "--tasks", "rte"], ["is not reachable", "--glue_dir DIR"]),
    (["-m", "flexibert.save_pretrained_models", "--model", "google/bert_uncased_L-2_H-128_A-2", "--output_dir", "bert"],
     ["is not reachable", "Give a local folder"]),
    (["-m", "flexibert.prepare_pretrain_dataset", "--hub_datasets", "wikipedia", "--tokenizer", "{tokenizer}", "--max_samples", "10",
      "--output_dir", "corpus"], ["is not reachable", "--text_files FILE"]),
    (["-m", "flexibert.tokenize_glue_datasets", "--tokenizer", "roberta-base", "--glue_dir", "{glue}", "--tasks", "rte",
      "--output_dir", "tokenized"], ["is not reachable", "cannot load a tokenizer from 'roberta-base'"]),
], ids=["hub_tokenizer", "glue", "bert_checkpoint", "hub_corpus", "tokenizer_by_hub_name"])
def test_unreachable_hub_fails_at_once_with_the_offline_hint(tmp_path, offline_endpoint, local_inputs, argv, hints):
    argv = [arg.format(**local_inputs) for arg in argv]
    result, seconds = run(tmp_path, *argv, env=offline_endpoint)
    assert_fails_at_once(result, seconds, *hints)
    assert not {"tok", "bert", "corpus", "tokenized"} & {p.name for p in tmp_path.iterdir()}  # nothing written


@pytest.mark.slow
def test_offline_mode_skips_the_probe_and_still_gives_the_hint(tmp_path, counting_hub):
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: the clients read their (here empty) cache and nothing asks the network."""
    env = {"HF_ENDPOINT": counting_hub.url, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result, seconds = run(tmp_path, "-m", "flexibert.load_all_glue_datasets", "--tasks", "rte", env=env)
    assert_fails_at_once(result, seconds, "--glue_dir DIR")
    result, seconds = run(tmp_path, str(ROOT / "flexibert/save_roberta_tokenizer.py"), "--output_dir", "tok", env=env)
    assert_fails_at_once(result, seconds, "--train_files FILE")
    assert counting_hub.requests == []


@pytest.mark.slow
def test_local_files_never_reach_the_hub(tmp_path, counting_hub, local_inputs):
    result, _ = run(tmp_path, "-m", "flexibert.tokenize_glue_datasets", "--tokenizer", str(local_inputs["tokenizer"]),
                    "--glue_dir", str(local_inputs["glue"]), "--tasks", "rte", "--output_dir", "tokenized",
                    env={"HF_ENDPOINT": counting_hub.url})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tokenized" / "rte" / "dataset_dict.json").is_file()
    assert counting_hub.requests == []


@pytest.mark.slow
def test_a_reachable_hub_goes_on_to_the_download(tmp_path, counting_hub):
    """The probe only looks: a hub that answers (here: 404 to everything) gets the client's own requests and error."""
    result, seconds = run(tmp_path, "-m", "flexibert.save_pretrained_models", "--model", "nobody/no-such-bert", "--output_dir", "bert",
                          env={"HF_ENDPOINT": counting_hub.url})
    assert_fails_at_once(result, seconds, "cannot load a BERT checkpoint from 'nobody/no-such-bert'")
    assert "is not reachable" not in result.stderr
    assert counting_hub.requests[0] == "HEAD /" and any("no-such-bert" in r for r in counting_hub.requests[1:])


def test_probe_answers_within_its_timeout(silent_hub, counting_hub):
    started = time.monotonic()
    assert hub.unreachable_reason(silent_hub, timeout=0.5) is not None
    assert time.monotonic() - started < 2
    assert "refused" in hub.unreachable_reason(refused_url(), timeout=0.5).lower()
    assert hub.unreachable_reason(counting_hub.url) is None
    assert hub.unreachable_reason(counting_hub.url) is None  # the verdict is reused: one request for many loads
    assert counting_hub.requests == ["HEAD /"]


@pytest.mark.parametrize(("env", "hub_offline", "datasets_offline"), [
    ({}, False, False),
    ({"HF_HUB_OFFLINE": "1"}, True, True),
    ({"TRANSFORMERS_OFFLINE": "yes"}, True, True),
    ({"HF_DATASETS_OFFLINE": "1"}, False, True),
    ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}, True, False),  # datasets' own variable decides for datasets
])
def test_offline_mode_follows_the_libraries_variables(monkeypatch, env, hub_offline, datasets_offline):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub.offline_mode() is hub_offline and hub.offline_mode(datasets=True) is datasets_offline
