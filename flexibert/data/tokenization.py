"""The one tokenizer of a FlexiBERT project: RoBERTa's byte-level BPE, from the hub or trained offline.

Pretraining and fine-tuning use the same tokenizer (the original fine-tuned with a different one),
and a model's ``vocab_size`` and ``pad_token_id`` are read from it. Saving one never silently replaces
the tokenizer of a trained model (its ids would no longer match the embeddings) or another tokenizer:
``overwrite=True`` says so explicitly. Everything is checked before anything is trained or written.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, RobertaTokenizerFast

from flexibert.data.hub import HubUnreachableError, is_local, require_hub

ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in roberta-base
BYTE_ALPHABET = 256  # a byte-level BPE starts from every byte; its merges come on top
# Files of a saved tokenizer (any kind: BPE, WordPiece, SentencePiece), and of a saved model (weights, sharded or not).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
                       "tf_model.h5", "flax_model.msgpack")
_CHUNK = 1 << 20


class TokenizerError(ValueError):
    """A tokenizer's input text or output folder that the user can fix; the message says what is wrong and how."""


def check_output_dir(output_dir: str | Path, overwrite: bool = False, flag: str = "--output_dir") -> None:
    """Refuse a folder that cannot hold a tokenizer (a file) or that holds a model or tokenizer already, unless ``overwrite``."""
    output = Path(output_dir)
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == output else f"cannot be created: {existing} is a file"
        raise TokenizerError(f"{flag} {output} {where}, not a folder; give the path of a folder for the tokenizer files "
                             "(it is created if missing)")
    if overwrite or not output.is_dir():
        return
    model = sorted({p.name for pattern in MODEL_FILE_PATTERNS for p in output.glob(pattern) if p.is_file()})
    tokenizer = [name for name in TOKENIZER_FILES if (output / name).is_file()]
    if model and tokenizer:
        raise TokenizerError(f"{flag} {output} already holds a model and its tokenizer ({', '.join(model + tokenizer)}): saving would "
                             "replace the tokenizer the model was trained with; choose another folder, or pass --overwrite to replace it")
    if model:
        raise TokenizerError(f"{flag} {output} already holds a model ({', '.join(model)}): a tokenizer saved there would be taken for "
                             "the one the model was trained with; choose another folder, or pass --overwrite to save it there anyway")
    if tokenizer:
        raise TokenizerError(f"{flag} {output} already holds a tokenizer ({', '.join(tokenizer)}); choose another folder, "
                             "or pass --overwrite to replace it")


def text_problem(path: str | Path) -> str | None:
    """Why a file cannot be trained on (missing, empty, only whitespace, binary: NUL bytes or not UTF-8), or None for text.

    The reason completes a sentence that starts with the file's name ("x.bin is binary, not text ..."). The whole file is read
    (in chunks): the trainer fails on invalid UTF-8 anywhere in it.
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist" if not path.exists() else "is not a file"
    decoder = codecs.getincrementaldecoder("utf-8")()
    blank = True
    offset = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            nul = chunk.find(b"\0")
            if nul >= 0:
                return f"is binary, not text (a NUL byte at byte {offset + nul:,})"
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                return f"is binary or not UTF-8 text (an invalid byte at byte {offset + err.start:,})"
            blank = blank and not text.replace("\ufeff", "").strip()
            if not chunk:
                break
            offset += len(chunk)
    if offset == 0:
        return "is empty"
    return "holds only whitespace" if blank else None


def check_text_files(files: Sequence[str | Path], flag: str = "--train_files") -> None:
    """Refuse text files the tokenizer cannot learn from, naming every one of them and why."""
    if not files:
        raise TokenizerError(f"{flag}: no files given; give the plain-text files of your corpus")
    problems = [f"{f} {problem}" for f in files if (problem := text_problem(f))]
    if problems:
        raise TokenizerError(f"{flag} cannot train a tokenizer: {'; '.join(problems)}; give plain-text files of your corpus in "
                             "UTF-8 (convert other encodings first) and leave out empty ones")


def _save(tokenizer: PreTrainedTokenizerBase, output_dir: str | Path, overwrite: bool) -> None:
    """Save ``tokenizer`` to ``output_dir``; with ``overwrite`` the files of an earlier tokenizer there go first (none is left mixed in)."""
    output = Path(output_dir)
    if overwrite:
        for name in TOKENIZER_FILES:
            (output / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(str(output))


def train_bpe_tokenizer(
    files: Sequence[str | Path], output_dir: str | Path, vocab_size: int = 8000, min_frequency: int = 2, max_length: int = 512,
    *, overwrite: bool = False,
) -> RobertaTokenizerFast:
    """Train a byte-level BPE with RoBERTa's special tokens on text files and save it where ``AutoTokenizer`` finds it.

    Raises :class:`TokenizerError`, before anything is written, for a folder that already holds a model or a tokenizer
    (unless ``overwrite``) or is a file, for files that hold no text, and when the text is too little to learn any merge.
    """
    smallest = BYTE_ALPHABET + len(ROBERTA_SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise TokenizerError(f"--vocab_size {vocab_size} must be at least {smallest} ({BYTE_ALPHABET} byte symbols + "
                             f"{len(ROBERTA_SPECIAL_TOKENS)} special tokens); pass a larger --vocab_size (default 8000)")
    if min_frequency < 1:
        raise TokenizerError(f"--min_frequency {min_frequency} must be at least 1 (the pair count a merge needs); "
                             "pass 1 or more (default 2)")
    if max_length < 1:
        raise TokenizerError(f"--max_length {max_length} must be at least 1 (the longest input, in tokens); pass e.g. 512, the default")
    check_output_dir(output_dir, overwrite)
    check_text_files(files)
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(f) for f in files], vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=ROBERTA_SPECIAL_TOKENS)
    if bpe.get_vocab_size() <= smallest < vocab_size:
        raise TokenizerError(f"--train_files hold too little text to learn any BPE merge seen at least --min_frequency "
                             f"{min_frequency} times (vocab {bpe.get_vocab_size()}: bytes only); give more text or lower "
                             "--min_frequency")
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=max_length,
    )
    _save(tokenizer, output_dir, overwrite)
    return tokenizer


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """A saved tokenizer directory (or a hub name such as ``roberta-base`` when the hub is reachable).

    A name that is not a local path is looked for on the hub, which is probed first (data/hub.py): offline,
    the error comes at once instead of after the hub client's retries.
    """
    try:
        if not is_local(name_or_path):
            require_hub(f"the tokenizer {str(name_or_path)!r}")
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as err:
        offline = f" ({err})" if isinstance(err, HubUnreachableError) else ""
        raise OSError(
            f"cannot load a tokenizer from {name_or_path!r}{offline}: save one with `python flexibert/save_roberta_tokenizer.py "
            f"--output_dir DIR` (online) or `... --train_files FILE ...` (offline)"
        ) from err


def save_hub_tokenizer(name: str, output_dir: str | Path, *, overwrite: bool = False) -> PreTrainedTokenizerBase:
    """Download a hub tokenizer (``roberta-base``) and save it; without the hub, the error says how to train one offline.

    Raises :class:`TokenizerError` first, before downloading, for an output folder :func:`check_output_dir` refuses; the hub is
    probed before the download (data/hub.py), so that an offline machine gets the error at once.
    """
    check_output_dir(output_dir, overwrite)
    try:
        if not is_local(name):
            require_hub(f"the {name!r} tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise OSError(
            f"cannot download the {name!r} tokenizer ({type(err).__name__}: {str(err).splitlines()[0]}).\n"
            "Without the Hugging Face hub, train one offline on your corpus instead: "
            f"python flexibert/save_roberta_tokenizer.py --output_dir {output_dir} --train_files FILE [FILE ...]"
        ) from None
    _save(tokenizer, output_dir, overwrite)
    return tokenizer
