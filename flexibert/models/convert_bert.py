"""Import Hugging Face BERT checkpoints as FlexiBERT models with identical outputs."""

from __future__ import annotations

import torch
from transformers import BertForMaskedLM, BertForSequenceClassification, BertModel, PreTrainedModel

from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.modeling_flexibert import FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification, FlexiBERTModel

_LAYER_RENAMES = {"intermediate.dense.": "intermediate.sequential.0."}


def bert_model_dict(bert_config) -> dict:
    """The standard FlexiBERT dict of a homogeneous BERT: every layer 'sa'/'sdp' with BERT's sizes."""
    depth = bert_config.num_hidden_layers
    return {
        "l": depth,
        "o": ["sa"] * depth,
        "h": [bert_config.hidden_size] * depth,
        "n": [bert_config.num_attention_heads] * depth,
        "f": [[bert_config.intermediate_size]] * depth,
        "p": ["sdp"] * depth,
    }


def flexibert_config_from_bert(bert_config) -> FlexiBERTConfig:
    """A FlexiBERT config that reproduces a BERT config: absolute positions, BERT's token types and vocab."""
    return FlexiBERTConfig(
        model_dict=bert_model_dict(bert_config),
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        type_vocab_size=bert_config.type_vocab_size,
        position_embedding_type="absolute",
        hidden_act=bert_config.hidden_act,
        hidden_dropout_prob=bert_config.hidden_dropout_prob,
        attention_probs_dropout_prob=bert_config.attention_probs_dropout_prob,
        classifier_dropout=bert_config.classifier_dropout,
        layer_norm_eps=bert_config.layer_norm_eps,
        initializer_range=bert_config.initializer_range,
        pad_token_id=bert_config.pad_token_id,
        bos_token_id=bert_config.bos_token_id,
        eos_token_id=bert_config.eos_token_id,
        num_labels=bert_config.num_labels,
        id2label=bert_config.id2label,
        label2id=bert_config.label2id,
        problem_type=bert_config.problem_type,
    )


def _flexibert_name(bert_name: str) -> str:
    for old, new in _LAYER_RENAMES.items():
        bert_name = bert_name.replace(old, new)
    return bert_name.replace("cls.predictions.bias", "cls.predictions.decoder.bias")


def convert_bert(bert_model: PreTrainedModel) -> PreTrainedModel:
    """Return the FlexiBERT twin of a ``BertModel``, ``BertForMaskedLM`` or ``BertForSequenceClassification``.

    The MLM decoder is copied rather than tied (FlexiBERT never ties it), so the outputs are equal
    at conversion time. Raises ``TypeError`` for other classes.
    """
    classes = {
        BertForMaskedLM: FlexiBERTForMaskedLM,
        BertForSequenceClassification: FlexiBERTForSequenceClassification,
        BertModel: FlexiBERTModel,
    }
    target_class = next((dst for src, dst in classes.items() if isinstance(bert_model, src)), None)
    if target_class is None:
        raise TypeError(
            f"convert_bert takes BertModel, BertForMaskedLM or BertForSequenceClassification, got {type(bert_model).__name__}"
        )
    config = flexibert_config_from_bert(bert_model.config)
    kwargs = {"add_pooling_layer": getattr(bert_model, "pooler", None) is not None} if target_class is FlexiBERTModel else {}
    model = target_class(config, **kwargs)
    source = {_flexibert_name(k): v for k, v in bert_model.state_dict().items()}
    target = model.state_dict()
    missing = sorted(set(target) - set(source))
    if missing:
        raise ValueError(f"the BERT checkpoint lacks weights the FlexiBERT model needs: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in target.items():
            tensor.copy_(source[name])
    return model.to(bert_model.dtype).train(bert_model.training)
