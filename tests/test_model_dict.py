"""Model dicts: both formats parse, bad dicts fail with errors that name the key and the layer."""

import json

import pytest
from helpers import BERT_TINY, FLEXIBERT_MINI

from flexibert import FlexiBERTConfig, parse_model_dict


def test_standard_and_hetero_parse():
    layers, hetero = parse_model_dict(FLEXIBERT_MINI)
    assert not hetero and [s.op for s in layers] == ["sa", "sa", "l", "l"]
    assert [s.head_size for s in layers] == [128, 128, 32, 32]
    layers, hetero = parse_model_dict({"l": 1, "o": [["sa_wma_16", "c_13_16", "l_dft_16"]], "h": [40], "f": [[64, 32]]})
    assert hetero and layers[0].num_heads == 3 and layers[0].head_size == 16
    assert [(h.kind, h.param) for h in layers[0].heads] == [("sa", "wma"), ("c", 13), ("l", "dft")]


def _with(**changes):
    d = json.loads(json.dumps(BERT_TINY))
    d.update(changes)
    return d


HETERO = {"l": 1, "o": [["sa_sdp_16", "c_9_16"]], "h": [32], "f": [[64]]}

BAD_DICTS = [
    (_with(h=[128]), "key 'h': expected a list with one entry per layer (l=2), got 1 entries"),
    (_with(o=["sa", "xx"]), "key 'o', layer 1: unknown operation 'xx'"),
    (_with(p=["sdp", "dft"]), "key 'p', layer 1: unknown parameter 'dft' for operation 'sa'"),
    (_with(n=[2, 3]), "key 'n', layer 1: hidden size h=128 is not divisible by n=3"),
    (_with(o=["sa", "c"], p=["sdp", 9], n=[2, 1]), "key 'n', layer 1: a 'c' layer splits its heads"),
    (_with(o=["c", "c"], p=[9, "9"]), "key 'p', layer 1: convolution kernel size must be an odd positive integer"),
    (_with(o=["c", "c"], p=[9, 4]), "key 'p', layer 1: convolution kernel size must be an odd positive integer"),
    (_with(f=[[512], []]), "key 'f', layer 1: expected a non-empty list of positive ints"),
    (_with(l=0), "key 'l': expected a positive number of layers"),
    (_with(x=1), "unknown ['x']"),
    ({k: v for k, v in BERT_TINY.items() if k != "n"}, "missing ['n']"),
    ({**HETERO, "o": [["sa_sdp_16", "c_9_32"]]}, "key 'o', layer 0: all heads of a layer must have the same head size, got [16, 32]"),
    ({**HETERO, "o": [["sa_sdp16"]]}, "key 'o', layer 0: malformed head operation 'sa_sdp16'"),
    ({**HETERO, "o": [["l_fft_16"]]}, "unknown parameter 'fft' for operation 'l'"),
    ({**HETERO, "o": [["c_8_16"]]}, "convolution kernel size must be an odd positive integer"),
    ({**HETERO, "o": ["sa"]}, "key 'o', layer 0: the hetero format expects a non-empty list"),
    ({**HETERO, "n": [2]}, "unknown ['n']"),
]


@pytest.mark.parametrize("model_dict,message", BAD_DICTS)
def test_invalid_dicts_raise_value_error_naming_key_and_layer(model_dict, message):
    with pytest.raises(ValueError) as err:
        FlexiBERTConfig(model_dict=model_dict)
    assert message in str(err.value)


def test_seed_api_and_classmethod_build_the_same_config():
    cfg = FlexiBERTConfig()
    returned = cfg.from_model_dict(FLEXIBERT_MINI)
    assert returned is cfg and cfg.model_dict == FLEXIBERT_MINI
    other = FlexiBERTConfig.from_model_dict(FLEXIBERT_MINI, vocab_size=30522)
    assert other is not cfg and other.model_dict == FLEXIBERT_MINI and other.vocab_size == 30522
    assert cfg.num_hidden_layers == 4 and cfg.hidden_size == 128 and not cfg.is_hetero


def test_config_copies_dict_and_round_trips_through_json(tmp_path):
    d = json.loads(json.dumps(FLEXIBERT_MINI))
    cfg = FlexiBERTConfig.from_model_dict(d)
    d["h"][0] = 999  # later changes to the caller's dict must not leak into the config
    assert cfg.model_dict["h"][0] == 256
    cfg.save_pretrained(tmp_path)
    loaded = FlexiBERTConfig.from_pretrained(tmp_path)
    assert loaded.model_dict == FLEXIBERT_MINI and loaded.position_embedding_type == "relative_key"


def test_defaults_follow_the_roberta_tokenizer():
    cfg = FlexiBERTConfig()
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.max_position_embeddings, cfg.type_vocab_size) == (50265, 1, 514, 1)
    assert cfg.model_dict == BERT_TINY


def test_bad_position_type_is_rejected():
    with pytest.raises(ValueError, match="position_embedding_type"):
        FlexiBERTConfig(position_embedding_type="rotary")
