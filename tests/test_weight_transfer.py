"""Weight transfer: exact on identical models, seeded RP, no aliasing, overlap computed from dicts is what is copied."""

import copy

import pytest
import torch
from helpers import BERT_TINY, FLEXIBERT_MINI, random_hetero_dict, random_standard_dict, small_config

from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, FlexiBERTModel, model_overlap, overlap_report
from flexibert.models.weight_transfer import base_layout

HETERO = {"l": 3, "o": [["sa_sdp_8", "sa_wma_8", "c_9_8", "l_dft_8"], ["c_5_8", "l_dct_8"], ["sa_wma_16"]], "h": [32, 24, 24],
          "f": [[48, 32], [40], [32]]}


def _randomised(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("position", ["relative_key", "absolute"])
def test_layout_names_and_shapes_equal_the_model_state(rng, position):
    """The dict-only layout that model_overlap uses must describe the real model exactly."""
    dicts = [random_standard_dict(rng) for _ in range(15)] + [random_hetero_dict(rng) for _ in range(15)] + [HETERO, FLEXIBERT_MINI]
    for d in dicts:
        config = small_config(d, position_embedding_type=position)
        with torch.device("meta"):
            model = FlexiBERTModel(config, add_pooling_layer=False)
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        layout = base_layout(config)
        layout_shapes = {n: tuple(sum(b.size for b in axis) for axis in p.axes) for n, p in layout.items()}
        assert layout_shapes == shapes, d


@pytest.mark.parametrize("model_dict", [BERT_TINY, FLEXIBERT_MINI, HETERO])
@pytest.mark.parametrize("mode", ["OD", "RP"])
def test_transfer_into_identical_architecture_reproduces_outputs(model_dict, mode):
    source = _randomised(FlexiBERTForMaskedLM(small_config(model_dict)))
    target = FlexiBERTForMaskedLM(small_config(model_dict), transfer_mode=mode).eval()
    report = target.load_model_from_source(source)
    assert report.scalar_fraction == 1.0 and report.tensor_fraction == 1.0 and report.head_tensors_transferred == 6
    ids = torch.randint(0, 100, (2, 13))
    with torch.no_grad():
        assert torch.equal(target(ids).logits, source(ids).logits)


def test_seed_api_from_the_original_readme():
    mini = _randomised(FlexiBERTModel(FlexiBERTConfig().from_model_dict(FLEXIBERT_MINI)))
    config = FlexiBERTConfig()
    config.from_model_dict(BERT_TINY)
    bert_tiny = FlexiBERTModel(config, transfer_mode="RP")
    before = copy.deepcopy(bert_tiny.state_dict())
    report = bert_tiny.load_model_from_source(mini)
    # Every BERT-Tiny scalar has a counterpart in the wider FlexiBERT-Mini; the converse is partial.
    assert report.mode == "RP" and report.scalar_fraction == 1.0
    assert 0.2 < model_overlap(FLEXIBERT_MINI, BERT_TINY) < 1.0
    changed = [n for n, t in bert_tiny.state_dict().items() if not torch.equal(t, before[n])]
    assert "encoder.layer.1.output.dense.weight" in changed  # the last layer's output block is included
    assert "pooler.dense.weight" not in changed  # the pooler is task-specific and never transferred


def _sentinel_count(target_dict, source_dict, mode):
    """Count target scalars actually written by a transfer: fill the target with NaN, transfer, count non-NaN."""
    source = _randomised(FlexiBERTModel(small_config(source_dict), add_pooling_layer=False))
    target = FlexiBERTModel(small_config(target_dict), add_pooling_layer=False, transfer_mode=mode)
    with torch.no_grad():
        for p in target.parameters():
            p.fill_(float("nan"))
    report = target.load_model_from_source(source)
    written = {name: int((~p.isnan()).sum()) for name, p in target.named_parameters()}
    touched = sum(1 for p in target.parameters() if not p.isnan().all())
    return report, written, touched


@pytest.mark.parametrize("mode", ["OD", "RP"])
def test_model_overlap_equals_what_transfer_writes(rng, mode):
    pairs = []
    for _ in range(12):
        pairs.append((random_standard_dict(rng), random_standard_dict(rng)))
        pairs.append((random_hetero_dict(rng), random_hetero_dict(rng)))
    pairs += [(BERT_TINY, FLEXIBERT_MINI), (FLEXIBERT_MINI, BERT_TINY), (HETERO, random_hetero_dict(rng))]
    for target_dict, source_dict in pairs:
        report, written, touched = _sentinel_count(target_dict, source_dict, mode)
        predicted = overlap_report(target_dict, source_dict, small_config(target_dict))
        assert sum(written.values()) == report.scalars_transferred == predicted.scalars_transferred, (target_dict, source_dict)
        encoder = sum(n for name, n in written.items() if name.startswith("encoder."))
        assert encoder == report.encoder_scalars_transferred == predicted.encoder_scalars_transferred
        assert touched == report.tensors_transferred == predicted.tensors_transferred
        assert report.scalars_total == predicted.scalars_total
        assert report.source_encoder_scalars == predicted.source_encoder_scalars
        assert model_overlap(target_dict, source_dict, small_config(target_dict)) == pytest.approx(report.closeness)


def test_overlap_is_one_for_identical_and_ranks_closer_neighbours_higher():
    assert model_overlap(FLEXIBERT_MINI, FLEXIBERT_MINI) == 1.0
    deeper = {**BERT_TINY, "l": 3, "o": ["sa"] * 3, "h": [128] * 3, "n": [2] * 3, "f": [[512]] * 3, "p": ["sdp"] * 3}
    other_op = {**BERT_TINY, "o": ["sa", "l"], "p": ["sdp", "dft"]}
    assert 0.8 < model_overlap(BERT_TINY, other_op) < model_overlap(BERT_TINY, BERT_TINY)  # one layer changed: still close
    assert overlap_report(BERT_TINY, deeper).encoder_fraction == 1.0  # every tensor of the shallower target exists in the source...
    assert model_overlap(BERT_TINY, deeper) == pytest.approx(model_overlap(deeper, BERT_TINY))  # ...but closeness is symmetric
    assert model_overlap(deeper, BERT_TINY) < model_overlap(BERT_TINY, other_op)


def test_closeness_is_not_fooled_by_a_shared_embedding_table():
    """Every layer differs, yet the word-embedding table transfers: the old scalar fraction called this pair close."""
    far = {"l": 2, "o": ["c", "l"], "h": [128, 128], "n": [4, 4], "f": [[1024], [1024]], "p": [9, "dft"]}
    report = overlap_report(far, BERT_TINY)
    assert report.scalar_fraction > 0.9 and report.embedding_fraction == 1.0
    assert report.closeness < 0.6 and report.encoder_fraction < 0.5
    different_width = {**BERT_TINY, "h": [256, 256]}  # no hidden block matches: nothing of the encoder carries over
    assert overlap_report(different_width, BERT_TINY).embedding_fraction == 0.5 < overlap_report(BERT_TINY, BERT_TINY).embedding_fraction


def test_od_copies_leading_slices_when_widths_differ():
    source = _randomised(FlexiBERTModel(small_config(FLEXIBERT_MINI)))
    target = FlexiBERTModel(small_config({**FLEXIBERT_MINI, "h": [128, 128, 128, 128]}))
    target.load_model_from_source(source)
    s, t = source.state_dict(), target.state_dict()
    # hidden 256 -> 128 (leading half); head size 128 -> 64 on layer 0 (each head's leading rows).
    assert torch.equal(t["embeddings.word_embeddings.weight"], s["embeddings.word_embeddings.weight"][:, :128])
    q_src, q_tgt = s["encoder.layer.0.attention.self.query.weight"], t["encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(q_tgt[64:128], q_src[128:192, :128])  # head 1 of the target from head 1 of the source
    ff_src, ff_tgt = s["encoder.layer.0.intermediate.sequential.2.weight"], t["encoder.layer.0.intermediate.sequential.2.weight"]
    assert torch.equal(ff_tgt, ff_src)  # FF widths are equal, so the inner FF layer is copied whole
    assert torch.equal(t["encoder.layer.3.output.dense.weight"], s["encoder.layer.3.output.dense.weight"])


def test_rp_is_seeded_and_differs_across_seeds():
    source = _randomised(FlexiBERTModel(small_config(FLEXIBERT_MINI)))

    def transferred(seed):
        target = FlexiBERTModel(small_config(BERT_TINY), transfer_mode="RP")
        target.load_model_from_source(source, seed=seed)
        return target.state_dict()

    a, a_again, b = transferred(0), transferred(0), transferred(1)
    name = "embeddings.word_embeddings.weight"
    assert torch.equal(a[name], a_again[name]) and not torch.equal(a[name], b[name])
    od = FlexiBERTModel(small_config(BERT_TINY))
    od.load_model_from_source(source)
    assert not torch.allclose(a[name], od.state_dict()[name])  # RP is not the OD slice
    # An orthonormal projection keeps each embedding row's norm at most the source row's norm.
    assert (a[name].norm(dim=1) <= source.state_dict()[name].norm(dim=1) + 1e-5).all()


def test_transferred_tensors_are_copies_not_aliases():
    source = _randomised(FlexiBERTModel(small_config(HETERO)))
    target = FlexiBERTModel(small_config(HETERO))
    target.load_model_from_source(source)
    snapshot = copy.deepcopy(target.state_dict())
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    assert all(torch.equal(t, snapshot[n]) for n, t in target.state_dict().items())
    source_ptrs = {p.data_ptr() for p in source.parameters()}
    assert not source_ptrs & {p.data_ptr() for p in target.parameters()}


def test_hetero_heads_transfer_only_between_matching_types():
    source_dict = {"l": 1, "o": [["sa_sdp_8", "l_dft_8", "c_9_8"]], "h": [16], "f": [[32]]}
    target_dict = {"l": 1, "o": [["sa_wma_8", "c_5_8", "c_9_8"]], "h": [16], "f": [[32]]}
    source = _randomised(FlexiBERTModel(small_config(source_dict)))
    target = FlexiBERTModel(small_config(target_dict))
    before = copy.deepcopy(target.state_dict())
    target.load_model_from_source(source)
    q_src, q_tgt = source.state_dict()["encoder.layer.0.attention.self.query.weight"], target.state_dict()[
        "encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(q_tgt[:8], q_src[:8])  # sa <- sa (sdp and wma share the type)
    assert torch.equal(q_tgt[8:16], before["encoder.layer.0.attention.self.query.weight"][8:16])  # c <- l: untouched
    assert torch.equal(q_tgt[16:], q_src[16:])  # c <- c
    group = target.state_dict()["encoder.layer.0.attention.self.conv_groups.k9.out_weight"]
    assert torch.equal(group, source.state_dict()["encoder.layer.0.attention.self.conv_groups.k9.out_weight"])
    assert torch.equal(target.state_dict()["encoder.layer.0.attention.self.W"], before["encoder.layer.0.attention.self.W"])


def test_conv_kernels_transfer_their_central_taps():
    source_dict = {"l": 1, "o": ["c"], "h": [16], "n": [2], "f": [[32]], "p": [13]}
    target_dict = {**source_dict, "p": [5]}
    source = _randomised(FlexiBERTModel(small_config(source_dict)))
    target = FlexiBERTModel(small_config(target_dict))
    target.load_model_from_source(source)
    name = "encoder.layer.0.attention.self.key_conv_attn_layer.depthwise.weight"
    assert torch.equal(target.state_dict()[name], source.state_dict()[name][:, :, 4:9])
