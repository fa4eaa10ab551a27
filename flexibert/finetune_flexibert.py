"""Fine-tune a saved FlexiBERT model on one GLUE task and score it on the dev set(s).

    python flexibert/finetune_flexibert.py --model_name_or_path models/pretrained/HASH --task_name rte \\
        --glue_dir ../shared/data/glue --output_dir runs/glue/HASH/rte
    python -m flexibert.finetune_flexibert --model_name_or_path models/pretrained/HASH --task_name sst2 \\
        --dataset_dir GLUE_data --output_dir runs/glue/HASH/sst2

The model folder is one written by save_pretrained, e.g. a pretrained FlexiBERTForMaskedLM with its
tokenizer saved beside it: the MLM head is discarded, and a fresh pooler and classifier are trained
(a regression head for STS-B). Data come from the hub, from GLUE TSVs (--glue_dir) or from the output
of tokenize_glue_datasets.py (--dataset_dir); batches are padded to their longest input. The defaults
are the paper's GPU recipe. The final model is evaluated on the dev set(s) (MNLI: matched and
mismatched); --load_best_model_at_end instead evaluates every epoch and keeps the best epoch, so that
dev both selects and scores the model (an optimistic score).

Writes <output_dir>/results.json (metrics, task score 0-100, steps, wall time, parameter count).
Re-running the command resumes from the last checkpoint; a finished run is not redone.
"""

from __future__ import annotations

import sys

from flexibert.data.glue import GlueError
from flexibert.training.distributed import close_distributed
from flexibert.training.finetune import finetune, parse_args
from flexibert.training.settings import ConfigurationError


def main(argv: list[str] | None = None) -> dict:
    settings = parse_args(argv, description=__doc__)
    try:
        return finetune(settings)
    except (ConfigurationError, GlueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
    close_distributed()
