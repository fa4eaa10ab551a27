"""The one training stack: MLM pretraining, GLUE fine-tuning and scoring on shared settings, checkpoints and resume.

settings.py (the Trainer settings every recipe extends, their checks, TrainingArguments, ConfigurationError),
model_source.py (which model: a library hash, a model dict or a saved folder; the tokenizer),
checkpoints.py (resume the same model, clear, save on SIGTERM), distributed.py (torchrun ranks),
results.py (numbers as results files record them); the recipes pretrain.py, finetune.py and glue_score.py.
"""
