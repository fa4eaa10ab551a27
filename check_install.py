"""Check a FlexiBERT installation: the core must work; SLURM and hub access are reported for information.

    python check_install.py [--skip_hub]

Exits non-zero when the core is broken (imports, building FlexiBERT-Mini, a forward and backward pass).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
import urllib.request

FLEXIBERT_MINI = {
    "l": 4,
    "o": ["sa", "sa", "l", "l"],
    "h": [256, 256, 128, 128],
    "n": [2, 2, 4, 4],
    "f": [[512, 512, 512], [512, 512, 512], [1024], [1024]],
    "p": ["sdp", "sdp", "dct", "dct"],
}
HUB_URL = "https://huggingface.co/api/models/roberta-base"


def check_core() -> list[str]:
    """Build FlexiBERT-Mini for MLM and run one forward and backward pass; returns lines to print."""
    import torch
    import transformers

    import flexibert

    lines = [f"torch {torch.__version__}, transformers {transformers.__version__}, flexibert from {flexibert.__file__}"]
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    lines.append(f"GPUs: {len(gpus)}" + (f" ({', '.join(gpus)})" if gpus else " (training runs on the CPU)"))
    device = "cuda" if gpus else "cpu"
    config = flexibert.FlexiBERTConfig()
    config.from_model_dict(FLEXIBERT_MINI)
    model = flexibert.FlexiBERTForMaskedLM(config).to(device)
    ids = torch.randint(3, config.vocab_size, (2, 64), device=device)
    start = time.perf_counter()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    if not torch.isfinite(out.loss) or missing:
        raise RuntimeError(f"bad training step: loss {out.loss.item()}, parameters without gradients: {missing[:3]}")
    parameters = sum(p.numel() for p in model.parameters())
    lines.append(
        f"FlexiBERT-Mini MLM ({parameters:,} parameters): forward+backward on {device} in "
        f"{time.perf_counter() - start:.2f}s, loss {out.loss.item():.3f}"
    )
    return lines


def hub_reachable(timeout: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(HUB_URL, timeout=timeout) as response:
            return f"reachable (HTTP {response.status})"
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        return f"not reachable ({err}); use local files: --tokenizer DIR, --glue_dir DIR, --text_files ..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_hub", action="store_true", help="do not try to reach the Hugging Face hub")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}")
    try:
        for line in check_core():
            print(f"[ok]   {line}")
    except Exception:  # report any failure of the core with its traceback, then fail
        traceback.print_exc()
        print("[FAIL] the FlexiBERT core is broken; run `bash env_step.sh` to (re)install", file=sys.stderr)
        return 1
    sbatch = shutil.which("sbatch")
    print(f"[info] SLURM sbatch: {sbatch or 'not on PATH (use --executor local)'}")
    print(f"[info] Hugging Face hub: {'skipped' if args.skip_hub else hub_reachable()}")
    print("FlexiBERT installation OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
