"""The text the models see: GLUE tasks and their metrics, the tokenizer, the pretraining corpus and the offline demo data."""
