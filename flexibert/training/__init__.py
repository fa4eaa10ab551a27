"""The one training stack: MLM pretraining, GLUE fine-tuning and scoring, with checkpoints, resume and signals."""
