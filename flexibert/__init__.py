"""FlexiBERT: heterogeneous Transformer encoders, their weight transfer and BERT import.

Importing the package registers the model with the ``transformers`` Auto classes, so that
``AutoModel.from_pretrained(dir)`` loads a saved FlexiBERT model.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from embeddings.model_dict import parse_model_dict
from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.convert_bert import convert_bert
from flexibert.models.modeling_flexibert import FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification, FlexiBERTModel
from flexibert.models.weight_transfer import TransferReport, model_overlap, overlap_report, transfer_weights

AutoConfig.register("flexibert", FlexiBERTConfig, exist_ok=True)
AutoModel.register(FlexiBERTConfig, FlexiBERTModel, exist_ok=True)
AutoModelForMaskedLM.register(FlexiBERTConfig, FlexiBERTForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(FlexiBERTConfig, FlexiBERTForSequenceClassification, exist_ok=True)

__all__ = [
    "FlexiBERTConfig",
    "FlexiBERTForMaskedLM",
    "FlexiBERTForSequenceClassification",
    "FlexiBERTModel",
    "TransferReport",
    "convert_bert",
    "model_overlap",
    "overlap_report",
    "parse_model_dict",
    "transfer_weights",
]
