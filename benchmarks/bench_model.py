"""Speed of FlexiBERT against transformers' BertModel, and of each operation against a plain sdp layer.

    python benchmarks/bench_model.py [--batch_size 32] [--seq_len 128] [--repeats 15]

Table 1: tokens/s for inference and for a training step (forward + backward + AdamW) on BERT-Tiny,
BERT-Mini and BERT-Small dims: BertModel, the BERT-equivalent FlexiBERT (``convert_bert``: absolute
positions) and FlexiBERT with its default relative-key scores. Targets: FlexiBERT/BERT >= 1.0,
relative/absolute cost <= 1.3.
Table 2: time of one encoder layer per operation type (h=256, 4 heads, FF 1024), relative to the
``sa``/``sdp`` layer. Target: every ratio <= 2.
Table 3: gradient checkpointing (activation memory kept for the backward pass, eager vs checkpointed,
and the training-time cost) and ``torch.compile`` (inference speed-up over eager), for BertModel and
FlexiBERT with the same setting (``--settings_sizes``, default BERT-Mini).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code, even where another checkout is installed in editable mode

from flexibert import FlexiBERTConfig, FlexiBERTModel, convert_bert  # noqa: E402
from flexibert.models.modeling_flexibert import FlexiBERTLayer  # noqa: E402

SIZES = {"BERT-Tiny": (128, 2, 2, 512), "BERT-Mini": (256, 4, 4, 1024), "BERT-Small": (512, 4, 8, 2048)}
LAYER_OPS = {
    "sa sdp": ("sa", "sdp"),
    "sa wma": ("sa", "wma"),
    "l dft": ("l", "dft"),
    "l dct": ("l", "dct"),
    "c 5": ("c", 5),
    "c 9": ("c", 9),
    "c 13": ("c", 13),
    "hetero (sdp,wma,dft,c9)": None,
}


def median_seconds(steps: dict, repeats: int) -> dict:
    """Median time of each step; steps run round-robin so that drift in machine speed hits all alike."""
    for step in steps.values():
        step()  # warm-up (caches, allocator)
    times = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def inference_step(model, inputs):
    model.eval()

    def step():
        with torch.no_grad():
            model(**inputs)

    return step


def training_step(model, inputs):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = model(**inputs)
        out.last_hidden_state.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def model_table(args) -> list[str]:
    rows = ["| dims | BERT inf tok/s | FlexiBERT inf tok/s | ratio | BERT train tok/s | FlexiBERT train tok/s | ratio "
            "| relative-key / absolute (inf, train) |",
            "|---|---|---|---|---|---|---|---|"]
    tokens = args.batch_size * args.seq_len
    for name, (hidden, layers, heads, ff) in SIZES.items():
        if name not in args.sizes:
            continue
        torch.manual_seed(0)
        bert = BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff))
        flexi = convert_bert(bert)
        relative_config = FlexiBERTConfig(model_dict=flexi.config.model_dict, vocab_size=bert.config.vocab_size, pad_token_id=0)
        relative = FlexiBERTModel(relative_config)
        ids = torch.randint(1, bert.config.vocab_size, (args.batch_size, args.seq_len))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        models = {"bert": bert, "flexi": flexi, "relative": relative}
        speed = {}
        for kind, make_step in (("inf", inference_step), ("train", training_step)):
            seconds = median_seconds({label: make_step(model, inputs) for label, model in models.items()}, args.repeats)
            speed.update({(label, kind): tokens / s for label, s in seconds.items()})
        rows.append(
            f"| {name} | {speed['bert', 'inf']:,.0f} | {speed['flexi', 'inf']:,.0f} | {speed['flexi', 'inf'] / speed['bert', 'inf']:.2f} "
            f"| {speed['bert', 'train']:,.0f} | {speed['flexi', 'train']:,.0f} | {speed['flexi', 'train'] / speed['bert', 'train']:.2f} "
            f"| {speed['flexi', 'inf'] / speed['relative', 'inf']:.2f}, {speed['flexi', 'train'] / speed['relative', 'train']:.2f} |"
        )
    return rows


def saved_activation_bytes(model, inputs) -> int:
    """Bytes the forward pass keeps for the backward pass (what gradient checkpointing trades for recomputation).

    Counted with autograd's saved-tensor hooks, so it works on any device; weights kept for the
    backward count too, alike with and without checkpointing.
    """
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(**inputs)
    out.last_hidden_state.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return total


def settings_table(args) -> list[str]:
    """Gradient checkpointing (activation memory saved, training time cost) and torch.compile (inference speed-up),
    for BertModel and FlexiBERT (BERT-equivalent and relative-key) with the same setting."""
    rows = ["| dims | model | activations eager -> checkpointed (MB) | memory saved | train time cost of checkpointing "
            "| torch.compile inference speed-up |", "|---|---|---|---|---|---|"]
    for name in args.settings_sizes:
        hidden, layers, heads, ff = SIZES[name]
        torch.manual_seed(0)
        bert = BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ff))
        flexi = convert_bert(bert)
        relative = FlexiBERTModel(FlexiBERTConfig(model_dict=flexi.config.model_dict, vocab_size=bert.config.vocab_size, pad_token_id=0))
        ids = torch.randint(1, bert.config.vocab_size, (args.batch_size, args.seq_len))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for label, model in (("BertModel", bert), ("FlexiBERT (absolute)", flexi), ("FlexiBERT (relative-key)", relative)):
            rows.append(f"| {name} | {label} | " + _settings_cells(model, inputs, args) + " |")
    return rows


def _settings_cells(model, inputs, args) -> str:
    eager_bytes = saved_activation_bytes(model, inputs)
    eager_train = median_seconds({"t": training_step(model, inputs)}, args.repeats)["t"]
    model.activation_checkpointing_enable()
    checkpointed_bytes = saved_activation_bytes(model, inputs)
    checkpointed_train = median_seconds({"t": training_step(model, inputs)}, args.repeats)["t"]
    model.activation_checkpointing_disable()
    compiled = torch.compile(model, dynamic=False)
    inference = median_seconds({"eager": inference_step(model, inputs), "compiled": inference_step(compiled, inputs)}, args.repeats)
    return (f"{eager_bytes / 2**20:,.1f} -> {checkpointed_bytes / 2**20:,.1f} | {1 - checkpointed_bytes / eager_bytes:.0%} | "
            f"{checkpointed_train / eager_train:.2f}x | {inference['eager'] / inference['compiled']:.2f}x")


def layer_dict(op) -> dict:
    if op is None:
        return {"l": 1, "o": [["sa_sdp_64", "sa_wma_64", "l_dft_64", "c_9_64"]], "h": [256], "f": [[1024]]}
    kind, param = op
    return {"l": 1, "o": [kind], "h": [256], "n": [4], "f": [[1024]], "p": [param]}


def layer_table(args) -> list[str]:
    rows = ["| layer (h=256, 4 heads, relative-key) | inference ms | ratio to sdp | train ms | ratio to sdp |", "|---|---|---|---|---|"]
    x = torch.randn(args.batch_size, args.seq_len, 256)
    inference, training = {}, {}
    for name, op in LAYER_OPS.items():
        torch.manual_seed(0)
        config = FlexiBERTConfig(model_dict=layer_dict(op))
        layer = FlexiBERTLayer(config, config.layers[0], None)

        def infer(layer=layer):
            layer.eval()
            with torch.no_grad():
                layer(x, None, False)

        def train(layer=layer):
            layer.train()
            out, _ = layer(x, None, False)
            out.pow(2).mean().backward()

        inference[name], training[name] = infer, train
    inf, tr = median_seconds(inference, args.repeats), median_seconds(training, args.repeats)
    for name in LAYER_OPS:
        rows.append(f"| {name} | {inf[name] * 1e3:.1f} | {inf[name] / inf['sa sdp']:.2f} "
                    f"| {tr[name] * 1e3:.1f} | {tr[name] / tr['sa sdp']:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per measurement (median reported)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--settings_sizes", nargs="+", default=["BERT-Mini"], choices=list(SIZES),
                        help="dims of the gradient-checkpointing and torch.compile table (compiling takes a while on CPU)")
    parser.add_argument("--skip_settings", action="store_true", help="leave out the gradient-checkpointing and torch.compile table")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} x seq {args.seq_len}\n")
    print("\n".join(model_table(args)), flush=True)
    print()
    print("\n".join(layer_table(args)), flush=True)
    if not args.skip_settings:
        print()
        print("\n".join(settings_table(args)))


if __name__ == "__main__":
    main()
