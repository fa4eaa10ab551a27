"""Pretrain a FlexiBERT model with masked language modelling (MLM) on a prepared corpus.

    python flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file dataset/dataset_test.json
    python flexibert/pretrain_flexibert.py --model_dict '{"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2],
        "f": [[512], [512]], "p": ["sdp", "sdp"]}' --output_dir models/pretrained/bert_tiny
    torchrun --nproc_per_node 2 flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file LIB.json --bf16
    python flexibert/pretrain_flexibert.py --model_hash HASH --dataset_file LIB.json --init_from models/pretrained/NEIGHBOUR

The defaults are the paper's GPU recipe: 100,000 steps of 128 sequences x 512 tokens (global batch =
--per_device_train_batch_size 16 x --gradient_accumulation_steps 4 x 2 GPUs; on one GPU double one of
them), AdamW (lr 1e-4, betas 0.9/0.98, eps 1e-6, weight decay 0.01), 10,000 linear warm-up steps then
linear decay, 15% dynamic masking (80% <mask>, 10% random, 10% unchanged; special tokens never).
For a CPU try-out use e.g. --max_seq_length 128 (prepare the data with it) --max_steps 200
--warmup_steps 20 --learning_rate 1e-3 --per_device_train_batch_size 16 --gradient_accumulation_steps 1.

The vocabulary size and pad id come from --tokenizer (the one the dataset was prepared with). With
--init_from the new model starts from the weights of a trained FlexiBERT model (fine-grained weight
transfer, --transfer_mode RP or OD) instead of at random.

Re-running the same command resumes from the last checkpoint in --output_dir; on SIGTERM (a SLURM
time limit or requeue) a run first saves a checkpoint after its current step (under torchrun all ranks
stop at the same step); once finished it does nothing. --output_dir then holds the final
model (safetensors) with its tokenizer, trainer_state.json and pretrain_results.json (written
atomically): eval_loss and perplexity on the validation split (masked with a fixed seed, so
comparable across models), steps, wall time, tokens/s, parameter count, model dict and hash, and the
transferred fraction with --init_from. The checkpoints (the last --save_total_limit, optimizer state
included) are deleted once the run has finished, unless --keep_checkpoints is given.
"""

from __future__ import annotations

from flexibert.training.distributed import close_distributed
from flexibert.training.pretrain import parse_args, pretrain
from flexibert.training.settings import ConfigurationError


def main(argv: list[str] | None = None) -> dict:
    settings = parse_args(argv, description=__doc__)
    try:
        return pretrain(settings)
    except ConfigurationError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
    close_distributed()
