"""Knowledge transfer in a search: the closeness rule decides how long a warm start trains, and results say how a model was trained."""

import pytest
from helpers import BERT_TINY

from embeddings.library import Library
from flexibert.models.weight_transfer import model_overlap
from flexibert.search.job import pretrain_steps, training_record
from flexibert.search.report import pretraining_summary
from flexibert.search.transfer import DEFAULT_THRESHOLD, WARM_FRACTION, closest_trained_neighbor, warm_start_steps

S = 1000


def test_the_rule_trains_longer_the_less_of_the_encoder_carries_over():
    steps = [warm_start_steps(c, S) for c in (DEFAULT_THRESHOLD, 0.6, 0.7, 0.8, 0.9, 1.0)]
    assert steps[0] == round(WARM_FRACTION[0][1] * S) < S  # the least close warm start allowed still saves something
    assert steps == sorted(steps, reverse=True) and steps[1] > steps[-1]
    assert steps[-1] == round(WARM_FRACTION[-1][1] * S) < S  # the parent itself still trains, to adapt to its new seed and data order
    assert warm_start_steps(1.0, 1) == 1 and warm_start_steps(0.9, 3) >= 1


def test_one_layer_change_trains_fewer_steps_than_a_model_that_differs_in_every_layer():
    near = {**BERT_TINY, "o": ["sa", "l"], "p": ["sdp", "dct"]}
    far = {"l": 2, "o": ["c", "l"], "h": [128, 128], "n": [4, 4], "f": [[1024], [1024]], "p": [9, "dft"]}
    near_steps = warm_start_steps(model_overlap(near, BERT_TINY), S)
    far_steps = warm_start_steps(model_overlap(far, BERT_TINY), S)
    assert near_steps < far_steps <= S


@pytest.fixture(scope="module")
def library(nasbench) -> Library:
    return Library.load(nasbench["library"])


def test_job_steps_use_the_rule_for_its_neighbour_or_the_fixed_flag(library, nasbench):
    target = library.hashes[0]
    neighbor = library.neighbors_of(target)[0]
    config = {"library": str(nasbench["library"]), "pretrain_steps": S, "transfer_pretrain_steps": None}
    closeness = model_overlap(library.model_dict(target), library.model_dict(neighbor))
    assert pretrain_steps(config, target, None) == S
    assert pretrain_steps(config, target, neighbor) == warm_start_steps(closeness, S)
    assert pretrain_steps({**config, "transfer_pretrain_steps": 17}, target, neighbor) == 17


def test_closest_trained_neighbour_respects_the_threshold(library):
    target = library.hashes[0]
    neighbors = library.neighbors_of(target)
    closeness = {h: model_overlap(library.model_dict(target), library.model_dict(h)) for h in neighbors}
    best = max(neighbors, key=closeness.get)
    assert closest_trained_neighbor(library, target, set(neighbors), 0.0) == best
    assert closest_trained_neighbor(library, target, set(neighbors), closeness[best] + 1e-9) is None
    assert closest_trained_neighbor(library, target, set(), 0.0) is None


def test_results_record_how_a_model_was_pretrained():
    warm = training_record({"init_from": "/run/models/abc/pretrained", "closeness": 0.9, "global_step": 90, "max_steps": 90,
                            "eval_loss": 6.5}, budget_steps=200)
    assert warm == {"start": "warm", "from": "/run/models/abc/pretrained", "closeness": 0.9, "steps": 90, "budget_steps": 200,
                    "mlm_loss": 6.5}
    scratch = training_record({"init_from": None, "global_step": 200, "max_steps": 200, "eval_loss": 6.0}, budget_steps=200)
    assert scratch["start"] == "scratch" and scratch["from"] is None
    assert pretraining_summary(warm) == "warm (closeness 0.90), 90 of 200 steps"
    assert pretraining_summary(scratch) == "scratch, 200 steps" and pretraining_summary(None) == ""
