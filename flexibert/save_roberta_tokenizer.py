"""Save the one tokenizer of a FlexiBERT project: RoBERTa's byte-level BPE, used for pretraining and fine-tuning.

    python flexibert/save_roberta_tokenizer.py                                   # roberta-base from the hub
    python flexibert/save_roberta_tokenizer.py --train_files corpus1.txt corpus2.txt --vocab_size 8000   # offline

Online it saves the hub's ``roberta-base`` tokenizer (vocab 50,265). Offline (compute nodes, CI,
laptops without the hub) it trains a byte-level BPE with RoBERTa's special tokens (<s> <pad> </s>
<unk> <mask>, ids 0-4) on plain-text files and saves it in the same format. Either way the folder
loads with ``AutoTokenizer.from_pretrained`` and is what ``--tokenizer`` expects in
prepare_pretrain_dataset.py and pretrain_flexibert.py.

A folder that already holds a tokenizer, or a model (whose embeddings fit its own tokenizer), is
refused unless --overwrite is given; so are text files that hold no text (empty, only whitespace,
binary). Everything is checked before anything is trained, downloaded or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from flexibert.data.tokenization import TokenizerError, save_hub_tokenizer, train_bpe_tokenizer
from flexibert.utils.cli import HelpFormatter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="roberta_tokenizer", help="folder to save the tokenizer to")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the tokenizer in --output_dir when it already holds one, or holds a model (whose token ids "
                             "then may no longer match its embeddings); without it such a folder is refused")
    parser.add_argument("--hub_name", default="roberta-base", help="hub tokenizer to save when no --train_files are given")
    parser.add_argument("--train_files", nargs="+", default=None, metavar="FILE",
                        help="plain-text (UTF-8) files to train an offline byte-level BPE on (instead of downloading)")
    parser.add_argument("--vocab_size", type=int, default=8000, help="vocabulary size of the trained BPE (with --train_files)")
    parser.add_argument("--min_frequency", type=int, default=2, help="minimum pair count for a BPE merge (with --train_files)")
    parser.add_argument("--max_length", type=int, default=512, help="model_max_length stored with a trained tokenizer")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> PreTrainedTokenizerBase:
    args = parse_args(argv)
    output = Path(args.output_dir)
    try:
        if args.train_files:
            tokenizer = train_bpe_tokenizer(args.train_files, output, args.vocab_size, args.min_frequency, args.max_length,
                                            overwrite=args.overwrite)
            origin = f"trained on {len(args.train_files)} file(s)"
        else:
            tokenizer = save_hub_tokenizer(args.hub_name, output, overwrite=args.overwrite)
            origin = f"from the hub's {args.hub_name}"
    except (TokenizerError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"saved tokenizer {origin} (vocab {len(tokenizer):,}, pad id {tokenizer.pad_token_id}, "
          f"model_max_length {tokenizer.model_max_length}) to {output}")
    return tokenizer


if __name__ == "__main__":
    main()
