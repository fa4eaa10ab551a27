"""Shared helpers: random model dicts of both formats and small configs that keep tests fast."""

import itertools
import random

import torch

from flexibert import FlexiBERTConfig

SMALL = {"vocab_size": 101, "max_position_embeddings": 40, "pad_token_id": 1}
HETERO_OPS = ["sa_sdp", "sa_wma", "l_dft", "l_dct", "c_5", "c_9", "c_13"]

BERT_TINY = {"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}
BERT_MINI = {"l": 4, "o": ["sa"] * 4, "h": [256] * 4, "n": [4] * 4, "f": [[1024]] * 4, "p": ["sdp"] * 4}
FLEXIBERT_MINI = {
    "l": 4,
    "o": ["sa", "sa", "l", "l"],
    "h": [256, 256, 128, 128],
    "n": [2, 2, 4, 4],
    "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]],
    "p": ["sdp", "sdp", "dct", "dct"],
}
CONVBERT_TINY = {"l": 2, "o": ["c", "c"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": [9, 9]}
BERT_BASE_HETERO = {"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12}


def random_standard_dict(rng: random.Random, max_layers: int = 4) -> dict:
    depth = rng.randint(1, max_layers)
    d = {"l": depth, "o": [], "h": [], "n": [], "f": [], "p": []}
    for _ in range(depth):
        op = rng.choice(["sa", "l", "c"])
        n = rng.choice([2, 4]) if op == "c" else rng.choice([1, 2, 4])
        d["o"].append(op)
        d["n"].append(n)
        d["h"].append(rng.choice([16, 32, 48]) if n != 4 else rng.choice([16, 32]))
        d["f"].append([rng.choice([24, 32, 64])] * rng.randint(1, 3))
        d["p"].append(rng.choice({"sa": ["sdp", "wma"], "l": ["dft", "dct"], "c": [5, 9, 13]}[op]))
    return d


def random_hetero_dict(rng: random.Random, max_layers: int = 4) -> dict:
    depth = rng.randint(1, max_layers)
    d = {"l": depth, "o": [], "h": [], "f": []}
    for _ in range(depth):
        size = rng.choice([8, 12, 16])
        d["o"].append([f"{rng.choice(HETERO_OPS)}_{size}" for _ in range(rng.randint(1, 5))])
        d["h"].append(rng.choice([16, 24, 32]))
        d["f"].append([rng.choice([24, 32, 64]) for _ in range(rng.randint(1, 3))])
    return d


def small_config(model_dict: dict, **overrides) -> FlexiBERTConfig:
    return FlexiBERTConfig(model_dict=model_dict, **{**SMALL, **overrides})


def lin(i: int, o: int) -> int:
    return i * o + o


def expected_parameters(d: dict, vocab=50265, positions=514, types=1, relative=True, head=None, num_labels=2) -> int:
    """Parameter count of a FlexiBERT model written out from the architecture, independently of the code."""
    hetero = "p" not in d
    h = d["h"]
    total = vocab * h[0] + types * h[0] + 2 * h[0] + (0 if relative else positions * h[0])
    for i in range(d["l"]):
        hi = h[i]
        if hetero:
            ops = d["o"][i]
            a = int(ops[0].split("_")[2])
            width = len(ops) * a
            total += 3 * lin(hi, width) + lin(width, hi) + 2 * hi
            for op in ops:
                kind, param = op.split("_")[:2]
                if param == "wma":
                    total += a * a
                if kind == "c":
                    k = int(param)
                    total += a * k + a * a + a + lin(a, k) + lin(a, a)
        else:
            n, op, p = d["n"][i], d["o"][i], d["p"][i]
            a = hi // n
            if op == "sa":
                total += 3 * lin(hi, hi) + (a * a if p == "wma" else 0)
            elif op == "l":
                total += (2 if relative else 1) * lin(hi, hi)
            else:
                half = n // 2
                c = half * a
                total += 3 * lin(hi, c) + hi * p + hi * c + c + lin(c, half * p) + lin(hi, c)
            total += lin(hi, hi) + 2 * hi
        total += (2 * positions - 1) * a if relative else 0
        widths = [hi, *d["f"][i], hi]
        total += sum(lin(x, y) for x, y in itertools.pairwise(widths)) + 2 * hi
        if i + 1 < d["l"] and h[i + 1] != hi:
            total += lin(hi, h[i + 1])
    last = h[-1]
    if head == "mlm":
        return total + lin(last, last) + 2 * last + vocab * last + vocab
    total += lin(last, last)  # pooler
    return total + (lin(last, num_labels) if head == "cls" else 0)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
