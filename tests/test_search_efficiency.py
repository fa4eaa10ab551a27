"""Search strategies on NAS-Bench-BERT (GLUE of 491 trained architectures, looked up): honest budgets, fair baselines.

Every search here is a real one (inline executor, scores looked up in the benchmark file), so a
30-evaluation run takes seconds. Skipped when ../shared/data is missing.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from embeddings.graph import model_hash
from embeddings.library import Library
from flexibert.search import comparison
from flexibert.search.benchmarks import benchmark_index, benchmark_score
from flexibert.search.boshnas.surrogate import Surrogate
from flexibert.search.journal import Journal
from flexibert.search.strategies import SearchContext
from flexibert.search.strategies.boshnas import normalised_losses
from flexibert.search.strategies.surrogate_inputs import SurrogateInputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_repeated_architectures_score_their_mean_and_the_search_says_so_once(nasbench, nasbench_search, tmp_path):
    entries = json.loads(nasbench["file"].read_text())["entries"]
    index, repeated = benchmark_index(nasbench["file"])
    assert repeated == 9 and len(index) == 491 == len(Library.load(nasbench["library"]))
    by_hash: dict[str, list[float]] = {}
    for entry in entries:
        by_hash.setdefault(model_hash(entry["model_dict"]), []).append(entry["scores"]["glue"])
    twice = [h for h, values in by_hash.items() if len(values) == 2]
    assert len(twice) == 9
    for digest in twice:
        assert benchmark_score(nasbench["file"], "glue", digest) == pytest.approx(np.mean(by_hash[digest]))
        assert min(by_hash[digest]) < benchmark_score(nasbench["file"], "glue", digest) < max(by_hash[digest])
    state = nasbench_search(tmp_path / "random", "--strategy", "random", "--budget", "6")
    assert state.console.count("9 architecture(s) appear more than once") == 1


def test_budget_is_honoured_and_stopping_early_is_the_users_choice(nasbench, nasbench_search, tmp_path):
    quick = ("--patience", "1", "--aleatoric_rounds", "1", "--surrogate_epochs", "30", "--prob_random", "0", "--prob_uncertainty", "0")
    state = nasbench_search(tmp_path / "full", "--strategy", "boshnas", "--budget", "16", *quick)
    assert len(state.finished) == 16 and state.stopped == "budget"
    early = nasbench_search(tmp_path / "early", "--strategy", "boshnas", "--budget", "16", "--stop_on_convergence", *quick)
    assert len(early.finished) < 16 and early.stopped == "converged"
    assert "stopped early: boshnas converged after" in early.console
    assert [e["reason"] for e in Journal(tmp_path / "early").read() if e["event"] == "stop"] == ["converged"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["boshnas", "gp", "tpe", "evolution"])
def test_every_shipped_strategy_beats_random_searchs_exact_expectation_at_30(nasbench, nasbench_search, tmp_path, strategy):
    best = [max(s.candidates[h].score for h in s.finished) for s in
            (nasbench_search(tmp_path / f"seed{seed}", "--strategy", strategy, "--budget", "30", "--seed", str(seed))
             for seed in (1, 2))]
    assert np.mean(best) > comparison.random_expected_best(nasbench["scores"], 30), best


@pytest.mark.parametrize("strategy", ["tpe", "evolution", "boshnas"])
def test_a_resumed_search_proposes_what_an_uninterrupted_one_would(nasbench, nasbench_search, tmp_path, strategy):
    flags = ("--strategy", strategy, "--seed", "4", "--surrogate_epochs", "40")
    straight = nasbench_search(tmp_path / "straight", *flags, "--budget", "16")
    nasbench_search(tmp_path / "resumed", *flags, "--budget", "9")
    resumed = nasbench_search(tmp_path / "resumed", *flags, "--budget", "16")
    assert resumed.finished == straight.finished and resumed.scores() == straight.scores()
    assert len({straight.candidates[h].method for h in straight.finished[5:]}) >= 1


def test_random_searchs_exact_expectation_matches_enumeration():
    scores = np.array([3.0, 9.0, 1.0, 7.0, 5.0, 7.5, 2.0])
    for k in (1, 3, 7):
        draws = list(itertools.combinations(scores, k))
        assert comparison.random_expected_best(scores, k) == pytest.approx(np.mean([max(d) for d in draws]))
    top = scores >= 7.5  # 2 good models of 7
    for k in (1, 2, 4, 6):
        hit = np.mean([any(d) for d in itertools.combinations(top, k)])
        assert comparison.random_hit_chance(len(scores), int(top.sum()), k) == pytest.approx(hit)
    orders = list(itertools.permutations(range(7)))
    first = np.mean([next(i for i, j in enumerate(order, 1) if top[j]) for order in orders])
    assert comparison.random_expected_evaluations(7, 2) == pytest.approx(first)


def test_curves_compare_at_equal_evaluations_and_say_when_runs_stopped():
    curve = comparison.best_curve([70.0, 72.0, 71.0], 5)
    assert curve[:3].tolist() == [70.0, 72.0, 72.0] and np.isnan(curve[3:]).all()  # no padding after the last evaluation
    assert comparison.evaluations_to([70.0, 72.0, 74.6], 74.5) == 3 and comparison.evaluations_to([70.0], 74.5) is None
    assert comparison.mean_and_spread(np.array([1.0, 3.0, np.nan])) == "2.00 ± 1.41 (2 of 3 runs)"  # sample std
    assert comparison.mean_and_spread(np.array([1.0, np.nan])) == "1.00 (1 of 2 runs)"  # one value: no spread to give


def test_boshnas_learns_from_the_model_dicts_choices_and_ranks_unseen_models_better_with_them(nasbench):
    from flexibert.search.strategies.encoding import ChoiceEncoding

    library = Library.load(nasbench["library"])
    context = SearchContext(library, {}, set())
    with_choices, embedding = (SurrogateInputs.of(context, choices=flag).matrix for flag in (True, False))
    encoding = ChoiceEncoding.of(library, tied=False)
    assert np.array_equal(embedding, context.features) and np.array_equal(with_choices[:, : embedding.shape[1]], embedding)
    one_hot = with_choices[:, embedding.shape[1]:]
    assert one_hot.shape[1] == sum(len(np.unique(column)) for column in encoding.codes.T)  # a column per value of each choice
    assert np.array_equal(one_hot.sum(axis=1), np.full(len(library), len(encoding.names)))  # one value per choice
    scores = np.array([benchmark_index(nasbench["file"])[0][h]["glue"] for h in library.hashes])
    rho = {}
    for name, inputs in (("choices", with_choices), ("embedding", embedding)):
        found = []
        for seed in range(3):
            known = np.random.default_rng(seed).choice(len(library), 20, replace=False)
            unseen = np.setdiff1d(np.arange(len(library)), known)
            surrogate = Surrogate(inputs.shape[1], seed=seed)
            surrogate.fit(inputs[known], normalised_losses(scores[known]))
            found.append(spearmanr(-surrogate.predict(inputs[unseen])[0], scores[unseen])[0])
        rho[name] = np.mean(found)
    assert rho["choices"] > rho["embedding"] + 0.15 and rho["choices"] > 0.6, rho


def test_boshnas_linear_prior_sees_the_choices_and_ranks_unseen_models_from_five_scores(nasbench):
    library = Library.load(nasbench["library"])
    context = SearchContext(library, {}, set())
    inputs, columns = SurrogateInputs.of(context).matrix, SurrogateInputs.of(context).prior_columns
    assert columns == (context.features.shape[1], inputs.shape[1])  # the choices, not the embedding
    assert SurrogateInputs.of(context, choices=False).prior_columns is None  # --embedding_only
    assert SurrogateInputs.of(context, prior=False).prior_columns is None  # --no_linear_prior
    scores = np.array([benchmark_index(nasbench["file"])[0][h]["glue"] for h in library.hashes])
    rho: dict[object, list[float]] = {None: [], columns: []}
    for seed in range(3):
        known = np.random.default_rng(seed).choice(len(library), 5, replace=False)
        unseen = np.setdiff1d(np.arange(len(library)), known)
        for prior in rho:
            surrogate = Surrogate(inputs.shape[1], seed=seed, prior_columns=prior)
            surrogate.fit(inputs[known], normalised_losses(scores[known]))
            rho[prior].append(spearmanr(-surrogate.predict(inputs[unseen])[0], scores[unseen])[0])
    # 0.80 against 0.14 here: five scores are too few for the teacher alone, not for a linear model of the choices.
    assert np.mean(rho[columns]) > max(0.6, np.mean(rho[None]) + 0.3), rho


class CountingSurrogate(Surrogate):
    """The real surrogate, counting its fits: how a test tells a reused fit from a refit."""

    fits = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        type(self).fits += 1
        return super().fit(X, y)


def test_boshnas_asked_a_round_again_reuses_that_rounds_fit_and_proposes_what_a_refit_would(nasbench, tmp_path):
    from flexibert.search.layout import RunLayout
    from flexibert.search.strategies import Boshnas, BoshnasSettings

    library = Library.load(nasbench["library"])
    truth = dict(zip(library.hashes, nasbench["scores"], strict=True))
    settings = BoshnasSettings(surrogate_epochs=20, prob_uncertainty=0.0, prob_random=0.0)

    def strategy() -> Boshnas:
        made = Boshnas(settings, RunLayout(tmp_path / "run"))
        made._surrogate_class = CountingSurrogate
        return made

    def context(known: int, refused: list[int] = ()) -> SearchContext:
        scores = {h: truth[h] for h in library.hashes[:known]}
        return SearchContext(library, scores, set(scores) | {library.hashes[i] for i in refused})

    first = strategy()
    first.propose(context(7), 2, np.random.default_rng(0), 0)
    before = first.state_dict()  # the controller's copy before round 1
    picked = [i for i, _ in first.propose(context(8), 2, np.random.default_rng(1), 1)]
    fits = CountingSurrogate.fits
    first.load_state_dict(before)  # a screened cap refused both: round 1 is asked again without them
    again = first.propose(context(8, picked), 2, np.random.default_rng(2), 1)
    assert CountingSurrogate.fits == fits  # round 1's fit stood in for a refit on the same scores
    resumed = strategy()  # a controller that never saw the first attempt refits from round 0's checkpoint
    resumed.load_state_dict(before)
    assert resumed.propose(context(8, picked), 2, np.random.default_rng(2), 1) == again
    assert CountingSurrogate.fits == fits + 1 and not set(picked) & {i for i, _ in again}
