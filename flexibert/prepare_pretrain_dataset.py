"""Tokenise a pretraining corpus and pack it into fixed-length sequences for MLM pretraining.

    python flexibert/prepare_pretrain_dataset.py --tokenizer roberta_tokenizer                  # Wikipedia + BookCorpus
    python flexibert/prepare_pretrain_dataset.py --hub_datasets wikipedia bookcorpus cc_news openwebtext c4   # the original's mix
    python flexibert/prepare_pretrain_dataset.py --text_files wiki.train.tokens --max_seq_length 128 --max_samples 20000

Sources. ``--hub_datasets`` takes short names or any hub dataset with a ``text`` column
(``PATH`` or ``PATH:CONFIG``); the short names are

    wikipedia    wikimedia/wikipedia, config 20231101.en (one row per article)
    bookcorpus   bookcorpus/bookcorpus (one row per sentence)
    cc_news      vblagoje/cc_news (one row per article)
    openwebtext  Skylion007/openwebtext (one row per web page)
    c4           allenai/c4, config en (one row per page; about 300 GB)

Without ``--text_files`` the default is Wikipedia + BookCorpus (BERT's corpus; the original FlexiBERT
interleaved all five, stopping at the shortest). ``--text_files`` are read with the datasets "text"
builder, one row per line. Every source keeps only its text; sources are concatenated.

Pipeline. ``--max_samples`` keeps the first N rows of each source (hub corpora are then streamed, not
downloaded whole). A seeded random ``--validation_fraction`` of the rows (articles, or lines of text
files) becomes the validation split, so no document is in both; each split keeps its order. Rows are
stripped; blank ones are dropped (WikiText's ``= Heading =`` lines are kept as text). Each row is
tokenised as ``<s> ... </s>``; a batched ``map`` then concatenates each batch of ``--batch_size`` rows
and cuts it into chunks of exactly ``--max_seq_length`` tokens, dropping the final remainder of each
batch (fewer than max_seq_length tokens per batch, about 0.5% for 1,000 Wikipedia articles at 512).

Checks. Before anything is loaded or tokenised, ``--text_files`` that are missing, empty, only
whitespace, or binary / not UTF-8 are refused on one line (the same check as save_roberta_tokenizer.py);
so are a corpus whose rows (with ``--max_samples``: the first N) are all blank, and a train or
validation split that gets no text. A split too short for one full sequence is refused after packing,
before anything is saved: nothing is written to ``--output_dir`` unless the dataset is complete.

Output contract (pretrain_flexibert.py relies on it): ``save_to_disk`` of a DatasetDict with splits
"train" and "validation", columns ``input_ids`` (int32) and ``special_tokens_mask`` (int8, 1 exactly
where the id is one of the tokenizer's special tokens, including an ``<unk>`` written in the text:
these are never masked), every row exactly max_seq_length long. ``preparation.json`` beside it
records the tokenizer, sources and sizes.
"""

from __future__ import annotations

import time

from datasets import DatasetDict

from flexibert.data.pretraining_corpus import CorpusError, parse_args, prepare_and_save


def main(argv: list[str] | None = None) -> DatasetDict:
    args = parse_args(argv, description=__doc__)
    start = time.perf_counter()
    try:
        packed, info = prepare_and_save(args)
    except CorpusError as err:
        raise SystemExit(f"error: {err}") from None
    sizes = info["sequences"]
    print(f"saved {sizes['train']:,} train + {sizes['validation']:,} validation sequences of {args.max_seq_length} tokens "
          f"({info['tokens']['train'] + info['tokens']['validation']:,} tokens, from {info['rows']:,} rows of "
          f"{', '.join(info['sources'])}) to {args.output_dir} in {time.perf_counter() - start:.1f}s")
    return packed


if __name__ == "__main__":
    main()
