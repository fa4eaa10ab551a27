"""Knowledge transfer in a search: which trained neighbour warm-starts a candidate, and for how many steps.

A warm start is only worth its name if the warm-started model ends up as good as the same architecture
trained from scratch for the full budget: otherwise the search scores it as a worse architecture than
it is. How many steps that takes depends on how much of the encoder carries over, which is what
:func:`~flexibert.models.weight_transfer.model_overlap` (the *closeness* of the two encoders) measures.
``benchmarks/transfer_benefit.py`` measures it (WikiText-2, BERT-Tiny-sized parent, S scratch steps,
two seeds): see :data:`WARM_FRACTION` for the rule drawn through its figures.
"""

from __future__ import annotations

import math

import numpy as np

from embeddings.library import Library
from flexibert.models.weight_transfer import model_overlap

DEFAULT_THRESHOLD = 0.5
"""Closeness below which a warm start is not tried. The two measured targets below it (wider and narrower, 0.47
and 0.48) reached scratch quality after a half and a quarter of S, so the threshold gives up some savings; it
stays, because below it the encoders share little and the rule has no measurement to stand on."""

WARM_FRACTION = ((0.5, 0.75), (0.75, 0.75), (0.9, 0.5), (1.0, 0.25))
"""(closeness, fraction of the scratch steps) points of the warm-start rule, interpolated linearly between them.

Drawn at or above what ``benchmarks/transfer_benefit.py`` measured (S = 200 steps, BERT-Tiny-sized parent, two
seeds of every scratch run and warm start, noise = the scratch runs' sample std, 0.044): the smallest fraction of
S after which a warm start's mean validation MLM loss was within the noise of scratch@S was 0.1 for the parent
itself (closeness 1), 0.5 for a one-layer change (0.89; 0.25 missed by 0.008), 0.75 for a second layer changed
to a 9-wide convolution with 4 heads and FF 1024 (0.75; one seed, 0.5 was 0.016 short on two), about 0.5 for a
model whose every layer differs (0.54; at the noise limit) and 0.1 for the parent with two more layers or one
fewer (0.67: the closeness under-rates a target that contains its source, or is contained in it). Each point is
at or above those measurements, so a warm start errs towards training longer: that costs steps, not a biased
score. At this CPU scale every loss is near the early plateau of MLM and the differences are about one noise
std, so the rule is kept conservative rather than drawn through them.

Checked again at S = 1000 steps, where the BERT-Tiny-sized models have left that plateau (scratch loss
5.4-5.9, 6.2 at hidden size 64; the targets with a DCT or DFT layer stay near 6.8), two scratch seeds, one
warm seed, noise 0.062: the fractions that reached scratch quality were 0.1 (the parent itself, the one-layer
change, the shallower model), 0.25 (every layer differs, deeper, narrower) and 0.5 (the second layer a
convolution: closeness 0.75). The rule gives each of them at least that, so it stands; its points are the
larger needs of the two scales.
"""


def warm_start_steps(closeness: float, pretrain_steps: int) -> int:
    """Pretraining steps after a warm start from a neighbour this close: the rule's fraction of ``pretrain_steps``."""
    points = np.array(WARM_FRACTION)
    fraction = float(np.interp(closeness, points[:, 0], points[:, 1]))
    return max(1, min(pretrain_steps, math.ceil(fraction * pretrain_steps)))


def closest_trained_neighbor(library: Library, model_hash: str, trained: set[str], threshold: float) -> str | None:
    """The trained library neighbour closest to ``model_hash`` (at least ``threshold``; ties: the nearer neighbour)."""
    target = library.model_dict(model_hash)
    best, best_closeness = None, threshold
    for neighbor in library.neighbors_of(model_hash) or []:
        if neighbor in trained:
            closeness = model_overlap(target, library.model_dict(neighbor))
            if closeness > best_closeness or (best is None and closeness >= best_closeness):
                best, best_closeness = neighbor, closeness
    return best
