"""The behaviour every transformers model shares, checked for every FlexiBERT flavour.

In the spirit of transformers' common model tests: a small tester builds tiny configs of each
flavour (self-attention only, mixed sa/l/c layers, hetero per-head layers, linear-transform only;
relative-key and absolute positions) and each test checks one contract: tuple vs ModelOutput,
attentions, problem types, config fields, resizing, gradient checkpointing, attention
implementations, torch.export and torch.compile.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput

from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification, FlexiBERTModel
from flexibert.models import modeling_flexibert

DICTS = {
    "sa": {"l": 2, "o": ["sa", "sa"], "h": [16, 16], "n": [2, 4], "f": [[24], [24]], "p": ["sdp", "wma"]},
    "mixed": {"l": 3, "o": ["sa", "l", "c"], "h": [16, 24, 16], "n": [2, 4, 4], "f": [[24], [32], [24]], "p": ["sdp", "dct", 5]},
    "hetero": {
        "l": 2,
        "o": [["sa_sdp_8", "sa_wma_8", "l_dft_8", "l_dct_8", "c_5_8"], ["c_3_8", "sa_sdp_8"]],
        "h": [24, 16],
        "f": [[32], [24, 24]],
    },
    "l": {"l": 2, "o": ["l", "l"], "h": [16, 16], "n": [2, 4], "f": [[24], [24]], "p": ["dft", "dct"]},
}
POSITIONS = ["relative_key", "absolute"]
FLAVOURS = [f"{name}-{pos}" for name in DICTS for pos in POSITIONS]
MODELS = [FlexiBERTModel, FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification]
OUTPUTS = {FlexiBERTModel: BaseModelOutputWithPooling, FlexiBERTForMaskedLM: MaskedLMOutput,
           FlexiBERTForSequenceClassification: SequenceClassifierOutput}


class ModelTester:
    """Tiny configs and inputs of one flavour; the second sequence of the batch is padded."""

    batch, length, vocab, max_positions = 2, 7, 60, 16

    def __init__(self, flavour: str):
        name, self.position = flavour.split("-")
        self.model_dict = DICTS[name]

    def config(self, **overrides) -> FlexiBERTConfig:
        settings = {"model_dict": self.model_dict, "vocab_size": self.vocab, "max_position_embeddings": self.max_positions,
                    "position_embedding_type": self.position, "pad_token_id": 1, "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0, **overrides}
        return FlexiBERTConfig(**settings)

    def model(self, cls=FlexiBERTModel, **overrides):
        torch.manual_seed(0)
        return cls(self.config(**overrides)).eval()

    def inputs(self, length: int | None = None, batch: int | None = None) -> dict:
        length, batch = length or self.length, batch or self.batch
        ids = torch.randint(2, self.vocab, (batch, length))
        mask = torch.ones_like(ids)
        mask[-1, length - 2 :] = 0
        return {"input_ids": ids, "attention_mask": mask}

    def expected_heads(self) -> list[int]:
        """Heads of each layer's attentions: n, except a standard 'c' layer's n/2 attention heads (as ConvBERT)."""
        config = self.config()
        return [spec.num_heads // 2 if spec.op == "c" else spec.num_heads for spec in config.layers]


@pytest.fixture(params=FLAVOURS)
def tester(request) -> ModelTester:
    return ModelTester(request.param)


def _first(output):
    return output[0] if isinstance(output, tuple) else output.to_tuple()[0]


# 1. return_dict / output_attentions from the config -------------------------------------------


@pytest.mark.parametrize("cls", MODELS)
def test_return_dict_false_in_config_gives_tuples_and_call_argument_wins(tester, cls):
    model = tester.model(cls, return_dict=False)
    inputs = tester.inputs()
    with torch.no_grad():
        as_tuple = model(**inputs)
        as_output = model(**inputs, return_dict=True)
    assert isinstance(as_tuple, tuple) and not isinstance(as_tuple, OUTPUTS[cls])
    assert isinstance(as_output, OUTPUTS[cls])
    assert len(as_tuple) == len(as_output.to_tuple())
    for a, b in zip(as_tuple, as_output.to_tuple(), strict=True):
        assert torch.equal(a, b)
    model.config.return_dict = True
    with torch.no_grad():
        assert isinstance(model(**inputs), OUTPUTS[cls])
        assert isinstance(model(**inputs, return_dict=False), tuple)


@pytest.mark.parametrize("cls", MODELS)
def test_output_attentions_in_config_is_honoured(tester, cls):
    model = tester.model(cls, output_attentions=True)
    with torch.no_grad():
        out = model(**tester.inputs())
        off = model(**tester.inputs(), output_attentions=False)
    assert out.attentions is not None and len(out.attentions) == model.config.num_hidden_layers
    assert off.attentions is None


def test_output_hidden_states_in_config_is_honoured(tester):
    model = tester.model(output_hidden_states=True)
    with torch.no_grad():
        out = model(**tester.inputs())
    widths = tester.model_dict["h"]  # each layer's output is projected to the next layer's width
    assert [h.shape[-1] for h in out.hidden_states] == [*widths, widths[-1]]


# 2. attentions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["call", "config"])
def test_attentions_have_one_tensor_per_layer_with_its_heads(tester, source):
    model = tester.model(output_attentions=True) if source == "config" else tester.model()
    inputs = tester.inputs()
    with torch.no_grad():
        out = model(**inputs, **({"output_attentions": True} if source == "call" else {}))
    b, length = inputs["input_ids"].shape
    assert [tuple(a.shape) for a in out.attentions] == [(b, h, length, length) for h in tester.expected_heads()]
    keep = inputs["attention_mask"].bool()
    for probs in out.attentions:
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))  # rows are distributions
        assert (probs[~keep[:, None, None, :].expand_as(probs)] == 0).all()  # padding gets nothing


def test_position_only_layers_return_their_shared_probabilities():
    """An 'l' layer's attentions are the probabilities of its position-only attention, broadcast per head:
    uniform over the kept tokens with absolute positions (no scores at all)."""
    tester = ModelTester("l-absolute")
    model = tester.model()
    inputs = tester.inputs()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    kept = inputs["attention_mask"].float()
    expected = (kept / kept.sum(-1, keepdim=True))[:, None, None, :]
    b, length = kept.shape
    for probs, heads in zip(out.attentions, tester.expected_heads(), strict=True):
        assert probs.shape == (b, heads, length, length)
        torch.testing.assert_close(probs, expected.expand_as(probs))


def test_relative_position_attentions_differ_per_head():
    tester = ModelTester("l-relative_key")
    with torch.no_grad():
        probs = tester.model()(**tester.inputs(), output_attentions=True).attentions[1]
    assert not torch.allclose(probs[:, 0], probs[:, 1])


# 3. problem types ------------------------------------------------------------------------------


def _classifier(tester, **overrides):
    return tester.model(FlexiBERTForSequenceClassification, **overrides)


def test_problem_types_give_the_matching_loss(tester):
    inputs = tester.inputs()
    b = inputs["input_ids"].shape[0]

    model = _classifier(tester, num_labels=1)  # inferred: regression
    labels = torch.tensor([0.5, -2.0])
    out = model(**inputs, labels=labels)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), labels))

    model = _classifier(tester, num_labels=3)  # inferred: single label from integer labels
    labels = torch.tensor([2, 0])
    out = model(**inputs, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert model.config.problem_type is None

    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    for problem in (None, "multi_label_classification"):  # inferred from float labels, or explicit
        model = _classifier(tester, num_labels=3, problem_type=problem)
        out = model(**inputs, labels=multi_hot)
        p = torch.sigmoid(out.logits)
        by_hand = -(multi_hot * p.log() + (1 - multi_hot) * (1 - p).log()).mean()
        torch.testing.assert_close(out.loss, by_hand)
        assert out.logits.shape == (b, 3)

    model = _classifier(tester, num_labels=2, problem_type="regression")
    targets = torch.randn(b, 2)
    out = model(**inputs, labels=targets)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits, targets))

    model = _classifier(tester, num_labels=2, problem_type="single_label_classification")
    out = model(**inputs, labels=torch.tensor([1, 0]))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([1, 0])))


def test_multi_label_loss_trains():
    tester = ModelTester("mixed-relative_key")
    model = _classifier(tester, num_labels=4).train()
    out = model(**tester.inputs(), labels=torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0]]))
    out.loss.backward()
    assert model.classifier.weight.grad is not None and torch.isfinite(out.loss)


# 4. num_attention_heads ------------------------------------------------------------------------


def test_num_attention_heads_fields(tester):
    config = tester.config()
    per_layer = tuple(spec.num_heads for spec in config.layers)
    assert config.num_attention_heads_per_layer == per_layer
    assert config.num_attention_heads == max(per_layer)


def test_num_attention_heads_of_each_format():
    hetero = ModelTester("hetero-relative_key").config()
    assert hetero.num_attention_heads_per_layer == (5, 2) and hetero.num_attention_heads == 5
    mixed = ModelTester("mixed-absolute").config()
    assert mixed.num_attention_heads_per_layer == (2, 4, 4) and mixed.num_attention_heads == 4


def test_new_config_fields_survive_save_and_load_and_old_configs_load(tmp_path, tester):
    config = tester.config(num_labels=3, problem_type="multi_label_classification")
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    # Derived from the model dict: not stored, so configs saved before these fields existed are the same files.
    assert "num_attention_heads" not in stored and "num_attention_heads_per_layer" not in stored
    loaded = FlexiBERTConfig.from_pretrained(tmp_path)
    assert loaded.num_attention_heads == config.num_attention_heads
    assert loaded.num_attention_heads_per_layer == config.num_attention_heads_per_layer
    assert loaded.problem_type == "multi_label_classification" and loaded.model_dict == tester.model_dict

    # A config.json that carries the derived values (e.g. written by generic tooling) loads when they agree ...
    stored.update(num_attention_heads=config.num_attention_heads,
                  num_attention_heads_per_layer=list(config.num_attention_heads_per_layer))
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert FlexiBERTConfig.from_pretrained(tmp_path).num_attention_heads == config.num_attention_heads
    # ... and is rejected when they contradict the model dict.
    stored["num_attention_heads"] = config.num_attention_heads + 1
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="derived from model_dict"):
        FlexiBERTConfig.from_pretrained(tmp_path)


def test_model_round_trip_with_config_settings(tmp_path):
    tester = ModelTester("hetero-absolute")
    model = tester.model(FlexiBERTForSequenceClassification, num_labels=3, return_dict=False)
    model.save_pretrained(tmp_path)
    loaded = FlexiBERTForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.return_dict is False and loaded.config.num_attention_heads == 5
    inputs = tester.inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], loaded(**inputs)[0])


# 5. resize_token_embeddings --------------------------------------------------------------------


@pytest.mark.parametrize("delta", [9, -5])
def test_resize_token_embeddings_resizes_input_table_and_decoder(tester, delta):
    model = tester.model(FlexiBERTForMaskedLM)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    old_bias = model.get_output_embeddings().bias.detach().clone()
    new = tester.vocab + delta
    keep = min(tester.vocab, new)
    model.resize_token_embeddings(new, mean_resizing=False)
    emb, dec = model.get_input_embeddings(), model.get_output_embeddings()
    assert model.config.vocab_size == new == emb.num_embeddings == dec.out_features
    assert dec.in_features == model.config.hidden_size and emb.embedding_dim == tester.model_dict["h"][0]
    assert torch.equal(emb.weight[:keep], old_in[:keep])
    assert torch.equal(dec.weight[:keep], old_out[:keep]) and torch.equal(dec.bias[:keep], old_bias[:keep])
    assert emb.weight.data_ptr() != dec.weight.data_ptr()  # never tied
    inputs = tester.inputs()
    inputs["input_ids"] = inputs["input_ids"].clamp(max=keep - 1)
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
    assert out.logits.shape[-1] == new and torch.isfinite(out.loss)


def test_decoder_is_never_tied(tmp_path):
    tester = ModelTester("mixed-relative_key")
    model = tester.model(FlexiBERTForMaskedLM)
    assert model.config.tie_word_embeddings is False and model.get_expanded_tied_weights_keys(all_submodels=True) == {}
    model.tie_weights()
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    model.resize_token_embeddings(tester.vocab + 3, mean_resizing=False)
    model.save_pretrained(tmp_path)
    loaded = FlexiBERTForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config.vocab_size == tester.vocab + 3
    assert torch.equal(loaded.get_output_embeddings().weight, model.get_output_embeddings().weight)


# 6. gradient checkpointing ---------------------------------------------------------------------


def _grads(model, inputs):
    model.zero_grad()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("enable", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_gradient_checkpointing_gives_the_same_gradients(tester, enable):
    model = tester.model(FlexiBERTForMaskedLM).train()  # dropout is off in the tester's configs
    assert model.supports_gradient_checkpointing
    inputs = tester.inputs()
    reference = _grads(model, inputs)
    getattr(model, enable)()
    assert model.is_gradient_checkpointing and model.bert.encoder.gradient_checkpointing
    calls = []
    func = model.bert.encoder._gradient_checkpointing_func
    model.bert.encoder._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or func(*a, **k)
    checkpointed = _grads(model, inputs)
    assert len(calls) == model.config.num_hidden_layers
    assert checkpointed.keys() == reference.keys() and len(reference) == len(list(model.parameters()))
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    model.eval()  # checkpointing only applies in training mode
    calls.clear()
    with torch.no_grad():
        model(**inputs)
    assert calls == []
    model.gradient_checkpointing_disable()
    assert not model.bert.encoder.gradient_checkpointing


# 7. attention implementations ------------------------------------------------------------------


def test_attn_implementation_is_declared_and_selectable(tmp_path, tester, monkeypatch):
    model = tester.model()
    assert type(model)._supports_sdpa and model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path)
    eager = FlexiBERTModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = FlexiBERTModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(modeling_flexibert.F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    inputs = tester.inputs()
    with torch.no_grad():
        out_eager = eager(**inputs)
        assert calls == []  # eager never calls SDPA
        out_sdpa = sdpa(**inputs)
        has_content_scores = tester.model_dict["o"] != ["l", "l"]
        assert bool(calls) == has_content_scores
        calls.clear()
        with_probs = sdpa(**inputs, output_attentions=True)  # falls back to eager for this call
        assert calls == []
        probs_eager = eager(**inputs, output_attentions=True).attentions
    torch.testing.assert_close(out_sdpa.last_hidden_state, out_eager.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_probs.last_hidden_state, out_eager.last_hidden_state, rtol=1e-5, atol=1e-5)
    for a, b in zip(with_probs.attentions, probs_eager, strict=True):
        torch.testing.assert_close(a, b)

    for cls in (FlexiBERTModel, FlexiBERTForMaskedLM):  # switching at run time is honoured too
        model = tester.model(cls)
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        calls.clear()
        with torch.no_grad():
            model(**inputs)
        assert calls == []
        model.set_attn_implementation("sdpa")
        with torch.no_grad():
            model(**inputs)
        assert bool(calls) == has_content_scores


# 8. torch.export and torch.compile -------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sa-relative_key", "mixed-absolute", "mixed-relative_key", "l-absolute", "l-relative_key"])
def test_export_with_dynamic_length_matches_eager(flavour):
    tester = ModelTester(flavour)
    model = tester.model()
    length = Dim("length", max=tester.max_positions)  # the model's position limit bounds the dimension
    ep = torch.export.export(model, (), kwargs=tester.inputs(length=7),
                             dynamic_shapes={"input_ids": {1: length}, "attention_mask": {1: length}})
    for n in (12, 3):
        inputs = tester.inputs(length=n)
        with torch.no_grad():
            exported, eager = ep.module()(**inputs), model(**inputs)
        torch.testing.assert_close(exported[0], eager.last_hidden_state, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(exported[1], eager.pooler_output, rtol=1e-5, atol=1e-5)


def test_export_without_mask_or_with_an_all_ones_mask():
    tester = ModelTester("hetero-relative_key")
    model = tester.model()
    ids = tester.inputs(length=5)["input_ids"]
    ep = torch.export.export(model, (ids,), dynamic_shapes={"input_ids": {1: Dim("length", max=tester.max_positions)}})
    longer = tester.inputs(length=9)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(longer)[0], model(longer).last_hidden_state, rtol=1e-5, atol=1e-5)
        full = torch.ones_like(longer)  # eager drops an all-ones mask, the traced graph applies it: same result
        torch.testing.assert_close(model(longer, attention_mask=full).last_hidden_state, model(longer).last_hidden_state)


@pytest.mark.parametrize("flavour", ["mixed-relative_key", "hetero-absolute"])
def test_torch_compile_matches_eager_at_two_lengths(flavour):
    torch._dynamo.reset()
    tester = ModelTester(flavour)
    model = tester.model(FlexiBERTForMaskedLM)
    compiled = torch.compile(model, backend="eager", dynamic=True)
    for n in (8, 5):
        inputs = tester.inputs(length=n)
        with torch.no_grad():
            torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_spectral_matrices_are_built_per_length_when_traced():
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    traced = torch.export.export(_Spectral(), (x,), dynamic_shapes={"x": {1: Dim("length", max=32)}})
    for n in (6, 11):
        y = torch.randn(1, n, 4, dtype=torch.float64)
        expected = torch.fft.fft(torch.fft.fft(y, dim=-1), dim=-2).real
        torch.testing.assert_close(traced.module()(y), expected)


class _Spectral(torch.nn.Module):
    def forward(self, x):
        return modeling_flexibert.spectral_mix(x, "dft")


# Batching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MODELS)
def test_batching_equivalence(tester, cls):
    """Each row of a batch gives what the model gives for that row alone (padding included: the same inputs)."""
    model = tester.model(cls, num_labels=3) if cls is FlexiBERTForSequenceClassification else tester.model(cls)
    inputs = tester.inputs(batch=3)
    with torch.no_grad():
        together = model(**inputs, output_hidden_states=True)
        for row in range(3):
            alone = model(**{key: value[row : row + 1] for key, value in inputs.items()}, output_hidden_states=True)
            torch.testing.assert_close(alone.hidden_states[-1][0], together.hidden_states[-1][row], atol=1e-5, rtol=1e-5)
            first = alone.to_tuple()[0]
            torch.testing.assert_close(first[0], together.to_tuple()[0][row], atol=1e-5, rtol=1e-5)
