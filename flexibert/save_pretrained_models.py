"""Convert Hugging Face BERT checkpoints (e.g. Google's BERT-Tiny/Mini/Small) into FlexiBERT models.

    python -m flexibert.save_pretrained_models --model google/bert_uncased_L-4_H-256_A-4 --output_dir models/bert_mini
    python flexibert/save_pretrained_models.py --model ./my_bert_checkpoint --output_dir models/my_flexibert --head mlm

The result loads with ``FlexiBERTModel.from_pretrained`` / ``AutoModel.from_pretrained`` (after
``import flexibert``) and gives the same outputs as the BERT checkpoint. The checkpoint's tokenizer
is saved beside it when the source has one, and a model card (README.md) says what the model is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification, BertModel

from flexibert.data.hub import is_local, require_hub
from flexibert.models.convert_bert import convert_bert
from flexibert.models.model_card import model_card, write_model_card

HEADS = {"base": BertModel, "mlm": BertForMaskedLM, "seq-cls": BertForSequenceClassification}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local BERT checkpoint folder or Hugging Face hub name")
    parser.add_argument("--output_dir", required=True, help="folder to write the FlexiBERT model to")
    parser.add_argument("--head", choices=sorted(HEADS), default="mlm", help="which model class to convert (default: mlm)")
    parser.add_argument("--num_labels", type=int, default=None, help="labels of a fresh classification head (--head seq-cls)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model in --output_dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    output = Path(args.output_dir)
    if (output / "config.json").exists() and not args.overwrite:
        sys.exit(f"error: {output} already holds a model; pass --overwrite to replace it")
    kwargs = {"num_labels": args.num_labels} if args.num_labels else {}
    try:
        if not is_local(args.model):
            require_hub(f"the checkpoint {args.model!r}")  # offline: the error at once, not after the client's retries
        bert = HEADS[args.head].from_pretrained(args.model, **kwargs)
    except OSError as err:
        sys.exit(f"error: cannot load a BERT checkpoint from {args.model!r}: {err}\n"
                 "Give a local folder with config.json and weights, or a hub name when the hub is reachable.")
    model = convert_bert(bert)
    model.save_pretrained(output)
    try:
        AutoTokenizer.from_pretrained(args.model).save_pretrained(output)
        tokenizer_note = "with its tokenizer"
    except (OSError, ValueError) as err:
        tokenizer_note = f"without a tokenizer ({type(err).__name__}: the source has none)"
    parameters = sum(p.numel() for p in model.parameters())
    write_model_card(output, model_card(model.config.model_dict, parameters, name=output.name or "flexibert-model",
                                        trained=f"Converted from the BERT checkpoint `{args.model}` ({args.head} head): the "
                                                "same weights, and the same outputs as the checkpoint."))
    print(f"saved {type(model).__name__} ({parameters:,} parameters) to {output} {tokenizer_note}, with a model card (README.md)")
    return output


if __name__ == "__main__":
    main()
