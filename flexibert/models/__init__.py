"""The FlexiBERT model: torch-free configuration, one modeling file, weight transfer between models, BERT import."""
