"""BERT import: converted models give BertModel's outputs; the CLI round-trips through save/load."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from flexibert import FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification, FlexiBERTModel, convert_bert
from flexibert.save_pretrained_models import main as convert_cli

SIZES = [  # (hidden, layers, heads, intermediate): BERT-Tiny, BERT-Mini, BERT-Small dims, and an odd one
    (128, 2, 2, 512),
    (256, 4, 4, 1024),
    (512, 4, 8, 2048),
    (96, 3, 3, 200),
]


def _bert_config(hidden, layers, heads, intermediate, **extra):
    return BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
                      vocab_size=500, **extra)


def _inputs(batch=3, length=21):
    ids = torch.randint(1, 500, (batch, length))
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("dims", SIZES)
def test_converted_bert_model_matches(dims):
    bert = BertModel(_bert_config(*dims)).eval()
    flexi = convert_bert(bert)
    assert type(flexi) is FlexiBERTModel and not flexi.training
    inputs = _inputs()
    with torch.no_grad():
        expected, got = bert(**inputs), flexi(**inputs)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", SIZES[:2])
def test_converted_masked_lm_logits_match(dims):
    bert = BertForMaskedLM(_bert_config(*dims)).eval()
    flexi = convert_bert(bert)
    assert type(flexi) is FlexiBERTForMaskedLM
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(flexi(**inputs).logits, bert(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_converted_sequence_classifier_matches_including_regression():
    for labels in (3, 1):
        bert = BertForSequenceClassification(_bert_config(128, 2, 2, 512, num_labels=labels)).eval()
        flexi = convert_bert(bert)
        assert type(flexi) is FlexiBERTForSequenceClassification and flexi.config.num_labels == labels
        inputs = _inputs()
        with torch.no_grad():
            torch.testing.assert_close(flexi(**inputs).logits, bert(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_convert_rejects_other_models():
    with pytest.raises(TypeError, match="BertModel, BertForMaskedLM or BertForSequenceClassification"):
        convert_bert(torch.nn.Linear(2, 2))


def test_cli_converts_a_local_checkpoint(tmp_path, capsys):
    bert = BertForMaskedLM(_bert_config(128, 2, 2, 512)).eval()
    bert.save_pretrained(tmp_path / "bert")
    convert_cli(["--model", str(tmp_path / "bert"), "--output_dir", str(tmp_path / "flexi")])
    assert "saved FlexiBERTForMaskedLM" in capsys.readouterr().out
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "flexi").eval()
    assert type(loaded) is FlexiBERTForMaskedLM and loaded.config.position_embedding_type == "absolute"
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, bert(**inputs).logits, atol=1e-5, rtol=1e-5)
    card = ModelCard.load(tmp_path / "flexi" / "README.md")
    assert card.data.library_name == "transformers" and "flexibert" in card.data.tags
    assert json.loads(card.text.split("```json\n")[1].split("\n```")[0]) == loaded.config.model_dict
    assert f"{sum(p.numel() for p in loaded.parameters()):,}" in card.text
    assert "AutoModel.from_pretrained" in card.text and str(tmp_path / "bert") in card.text
    with pytest.raises(SystemExit, match="--overwrite"):
        convert_cli(["--model", str(tmp_path / "bert"), "--output_dir", str(tmp_path / "flexi")])


def test_cli_reports_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="cannot load a BERT checkpoint"):
        convert_cli(["--model", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "out")])
