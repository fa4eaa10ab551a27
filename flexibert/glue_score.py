"""Fine-tune a FlexiBERT model on each chosen GLUE task and report its GLUE score (0-100).

    python flexibert/glue_score.py --model_name_or_path models/pretrained/HASH --output_dir runs/glue/HASH
    python -m flexibert.glue_score --model_name_or_path models/pretrained/HASH --glue_dir ../shared/data/glue \\
        --tasks sst2 mrpc stsb rte --output_dir runs/glue/HASH

Each task is fine-tuned in this process with finetune_flexibert.py's recipe (every flag below applies
to every task) into <output_dir>/<task>/. Task score: CoLA MCC x 100; STS-B mean of Pearson and
Spearman; MRPC and QQP mean of accuracy and F1; MNLI mean of matched and mismatched accuracy; the
others accuracy (all x 100, on the dev sets). The GLUE score is the mean over --tasks (default: the 8
tasks without WNLI). <output_dir>/results.json gets the per-task metrics and scores, the GLUE score,
the summed wall time and the encoder's parameter count. Re-running resumes: finished tasks (those
with <output_dir>/<task>/results.json) are kept, an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import sys

from flexibert.data.glue import GlueError
from flexibert.training.distributed import close_distributed
from flexibert.training.glue_score import parse_args, score_model
from flexibert.training.settings import ConfigurationError


def main(argv: list[str] | None = None) -> dict:
    settings = parse_args(argv, description=__doc__)
    try:
        return score_model(settings)
    except (ConfigurationError, GlueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
    close_distributed()
