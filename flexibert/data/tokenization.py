"""The one tokenizer of a FlexiBERT project: RoBERTa's byte-level BPE, from the hub or trained offline.

Pretraining and fine-tuning use the same tokenizer (the original fine-tuned with a different one),
and a model's ``vocab_size`` and ``pad_token_id`` are read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, RobertaTokenizerFast

ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in roberta-base


def train_bpe_tokenizer(
    files: Sequence[str | Path], output_dir: str | Path, vocab_size: int = 8000, min_frequency: int = 2, max_length: int = 512
) -> RobertaTokenizerFast:
    """Train a byte-level BPE with RoBERTa's special tokens on text files and save it where ``AutoTokenizer`` finds it."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"text files not found: {missing}")
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(f) for f in files], vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=ROBERTA_SPECIAL_TOKENS)
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=max_length,
    )
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """A saved tokenizer directory (or a hub name such as ``roberta-base`` when the hub is reachable)."""
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as err:
        raise OSError(
            f"cannot load a tokenizer from {name_or_path!r}: save one with `python flexibert/save_roberta_tokenizer.py "
            f"--output_dir DIR` (online) or `... --train_files FILE ...` (offline)"
        ) from err


def save_hub_tokenizer(name: str, output_dir: str | Path) -> PreTrainedTokenizerBase:
    """Download a hub tokenizer (``roberta-base``) and save it; without the hub, the error says how to train one offline."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise OSError(
            f"cannot download the {name!r} tokenizer ({type(err).__name__}: {str(err).splitlines()[0]}).\n"
            "Without the Hugging Face hub, train one offline on your corpus instead: "
            f"python flexibert/save_roberta_tokenizer.py --output_dir {output_dir} --train_files FILE [FILE ...]"
        ) from None
    tokenizer.save_pretrained(str(output_dir))
    return tokenizer
