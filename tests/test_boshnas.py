"""BOSHNAS surrogate: NPN moments, AdaHessian, the teacher/student/NPN surrogate, GOBI and the library snap.

Torch runs single-threaded here (see test_pretraining.py): these tiny networks train several times faster
on one thread, and far faster when other jobs share the cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from flexibert.search.boshnas.adahessian import AdaHessian, hutchinson_diagonal
from flexibert.search.boshnas.gobi import acquisition, gobi, snap_to_library
from flexibert.search.boshnas.linear_prior import LinearPrior
from flexibert.search.boshnas.npn import NPN, NPNLinear, NPNReLU, NPNSigmoid
from flexibert.search.boshnas.surrogate import Surrogate

D = 16
MC = 400_000
# AdaHessian's contract is loss.backward(create_graph=True), which torch warns about.
pytestmark = [pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def smooth_loss(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A sigmoid of a linear plus a mild quadratic form, scaled into [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=x.shape[1]) / math.sqrt(x.shape[1])
    q = rng.normal(size=(x.shape[1], x.shape[1])) / (2 * x.shape[1])
    z = x @ w + 0.5 * np.einsum("ni,ij,nj->n", x, q, x)
    return 0.1 + 0.8 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, D)).astype(np.float32)
    test = rng.normal(size=(400, D)).astype(np.float32)
    return {"X": train, "y": smooth_loss(train), "X_test": test, "y_test": smooth_loss(test)}


@pytest.fixture(scope="module")
def fitted(data) -> Surrogate:
    surrogate = Surrogate(D, seed=0)
    surrogate.fit(data["X"], data["y"])
    return surrogate


# ----------------------------------------------------------------------------------------------- NPN


def gaussian_samples(mean: torch.Tensor, var: torch.Tensor, n: int = MC) -> torch.Tensor:
    return mean + var.sqrt() * torch.randn(n, *mean.shape, dtype=torch.float64)


def assert_moments(mean: torch.Tensor, var: torch.Tensor, samples: torch.Tensor, mean_tol, var_tol) -> None:
    """Compare with the sample moments, allowing 5 standard errors on top of the given tolerances."""
    sample_mean, sample_var = samples.mean(0), samples.var(0)
    mean_se = (sample_var / len(samples)).sqrt()
    var_se = ((((samples - sample_mean) ** 4).mean(0) - sample_var**2) / len(samples)).sqrt()
    assert ((mean.double() - sample_mean).abs() <= mean_tol + 5 * mean_se).all(), (mean, sample_mean)
    assert ((var.double() - sample_var).abs() <= var_tol + 5 * var_se).all(), (var, sample_var)


def test_npn_linear_moments_match_monte_carlo():
    layer = NPNLinear(5, 3)
    with torch.no_grad():  # variances large enough to matter, unlike the initial ones
        layer.weight_var_raw.copy_(torch.log(torch.expm1(torch.rand(5, 3) * 0.3 + 0.05)))
        layer.bias_var_raw.fill_(math.log(math.expm1(0.1)))
        layer.bias_mean.copy_(torch.randn(3))
    x_mean, x_var = torch.randn(5), torch.rand(5) + 0.1
    with torch.no_grad():
        out_mean, out_var = layer(x_mean[None], x_var[None])
        det_mean, det_var = layer(x_mean[None])
    weight_mean, weight_var = layer.weight_mean.detach().double(), torch.nn.functional.softplus(layer.weight_var_raw.detach()).double()
    bias_var = torch.nn.functional.softplus(layer.bias_var_raw.detach()).double()
    n = 100_000
    weights = gaussian_samples(weight_mean, weight_var, n)
    biases = gaussian_samples(layer.bias_mean.detach().double(), bias_var, n)
    x = gaussian_samples(x_mean.double(), x_var.double(), n)
    assert_moments(out_mean[0], out_var[0], torch.einsum("ni,nio->no", x, weights) + biases, 0, 0)
    # var=None is a deterministic input: the same as variance 0.
    assert_moments(det_mean[0], det_var[0], torch.einsum("i,nio->no", x_mean.double(), weights) + biases, 0, 0)
    assert not torch.allclose(det_var, out_var)


def test_npn_relu_moments_exact_where_the_logistic_cdf_is_exact():
    """At mean 0 (and far from it) the logistic stands in for Phi exactly, so the Gaussian moments must match tightly."""
    var = torch.tensor([0.01, 0.5, 1.0, 4.0], dtype=torch.float64)
    out_mean, out_var = NPNReLU()(torch.zeros(4, dtype=torch.float64), var)
    torch.testing.assert_close(out_mean, var.sqrt() / math.sqrt(2 * math.pi), rtol=1e-12, atol=0)
    torch.testing.assert_close(out_var, var / 2 - var / (2 * math.pi), rtol=1e-12, atol=0)
    far_mean, far_var = NPNReLU()(torch.tensor([12.0, -12.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(far_mean, torch.tensor([12.0, 0.0], dtype=torch.float64), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(far_var, torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=1e-3, atol=1e-5)


def test_npn_relu_moments_match_monte_carlo():
    """Elsewhere the only error is the logistic approximation of Phi, of known size at each point."""
    mean = torch.tensor([-2.0, -0.7, 0.3, 1.0, 2.5], dtype=torch.float64)
    var = torch.tensor([0.5, 1.0, 0.2, 2.0, 1.5], dtype=torch.float64)
    out_mean, out_var = NPNReLU()(mean, var)
    z = mean / var.sqrt()
    gap = (torch.sigmoid(math.sqrt(8 / math.pi) * z) - torch.special.ndtr(z)).abs()
    assert gap.max() < 0.02
    mean_tol = gap * mean.abs()
    var_tol = gap * (mean**2 + var) + mean_tol * 2 * out_mean.abs() + mean_tol**2
    assert_moments(out_mean, out_var, gaussian_samples(mean, var).clamp_min(0), mean_tol, var_tol)


def test_npn_sigmoid_moments_match_monte_carlo():
    """The probit approximation: the mean is close; the variance is a loose (over)estimate."""
    mean = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0], dtype=torch.float64)
    var = torch.tensor([0.01, 0.5, 1.0, 3.0, 0.2, 5.0], dtype=torch.float64)
    out_mean, out_var = NPNSigmoid()(mean, var)
    assert_moments(out_mean, out_var, torch.sigmoid(gaussian_samples(mean, var)), 0.01, 0.03)
    deterministic_mean, _ = NPNSigmoid()(mean, torch.zeros_like(var))
    torch.testing.assert_close(deterministic_mean, torch.sigmoid(mean))


def test_npn_network_shapes_and_positive_variance():
    mean, var = NPN(D)(torch.randn(7, D))
    assert mean.shape == var.shape == (7,)
    assert ((mean > 0) & (mean < 1)).all() and (var > 0).all()


# ----------------------------------------------------------------------------------------- AdaHessian


def quadratic(x: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    return 0.5 * (curvature * x * x).sum()


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    curvature = torch.tensor([3.0, -0.5, 100.0, 1e-3])
    x = torch.randn(4, requires_grad=True)
    for seed in range(5):
        (grad,) = torch.autograd.grad(quadratic(x, curvature), x, create_graph=True)
        (estimate,) = hutchinson_diagonal([grad], [x], torch.Generator().manual_seed(seed))
        torch.testing.assert_close(estimate, curvature.abs())


@pytest.mark.parametrize("power, weight_decay", [(1.0, 0.0), (0.5, 0.1)])
def test_adahessian_steps_match_hand_computation(power, weight_decay):
    curvature = torch.tensor([4.0, 0.25, 9.0])
    start = torch.tensor([1.0, -2.0, 0.5])
    x = start.clone().requires_grad_(True)
    lr, (b1, b2), eps = 0.1, (0.9, 0.999), 1e-4
    optimizer = AdaHessian([x], lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay, hessian_power=power)
    expected, m, u = start.clone(), torch.zeros(3), torch.zeros(3)
    for t in (1, 2):
        optimizer.zero_grad()
        quadratic(x, curvature).backward(create_graph=True)
        optimizer.step()
        g = curvature * expected
        m, u = b1 * m + (1 - b1) * g, b2 * u + (1 - b2) * curvature**2
        denom = (u / (1 - b2**t)).sqrt() ** power + eps
        expected = expected - lr * (m / (1 - b1**t) / denom + weight_decay * expected)
        torch.testing.assert_close(x.detach(), expected)


def test_adahessian_requires_the_gradient_graph():
    x = torch.ones(2, requires_grad=True)
    optimizer = AdaHessian([x])
    quadratic(x, torch.ones(2)).backward()
    with pytest.raises(RuntimeError, match="create_graph=True"):
        optimizer.step()


def test_adahessian_gives_a_parameter_the_loss_is_linear_in_a_zero_hessian():
    x, b = torch.ones(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = AdaHessian([x, b], lr=0.1, eps=1e-4)
    (quadratic(x, torch.tensor([2.0, 2.0])) + 3 * b.sum()).backward(create_graph=True)  # b's gradient has no graph
    optimizer.step()
    torch.testing.assert_close(b.detach(), torch.tensor([-0.1 * 3 / 1e-4]))
    torch.testing.assert_close(x.detach(), torch.full((2,), 1 - 0.1 * 2 / (2 + 1e-4)))


def test_adahessian_beats_sgd_on_a_badly_scaled_quadratic():
    """AdaHessian shrinks both coordinates alike; SGD, held to a rate stable for the stiff one, barely moves the flat one."""
    curvature = torch.tensor([1000.0, 0.01])
    start = torch.tensor([1.0, 1.0])
    distance = {}
    for name in ("adahessian", "sgd"):
        x = start.clone().requires_grad_(True)
        # SGD at the largest stable rate for the stiff coordinate, 2 / 1000, minus a margin.
        optimizer = AdaHessian([x], lr=0.5) if name == "adahessian" else torch.optim.SGD([x], lr=1.9 / 1000)
        for _ in range(50):
            optimizer.zero_grad()
            quadratic(x, curvature).backward(create_graph=name == "adahessian")
            optimizer.step()
        distance[name] = x.detach().norm().item()
    assert distance["adahessian"] < 0.05 * distance["sgd"], distance


def test_adahessian_is_reproducible_with_a_seeded_generator():
    matrix = torch.tensor([[2.0, 0.9], [0.9, 1.0]])  # not diagonal: the estimate depends on the probes

    def run(seed: int) -> torch.Tensor:
        x = torch.tensor([1.0, -1.0], requires_grad=True)
        optimizer = AdaHessian([x], lr=0.3, generator=torch.Generator().manual_seed(seed))
        for _ in range(5):
            optimizer.zero_grad()
            (0.5 * x @ matrix @ x).backward(create_graph=True)
            optimizer.step()
        return x.detach()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


# ------------------------------------------------------------------------------------------ surrogate


def test_surrogate_ranks_held_out_points(fitted, data):
    mean, epistemic, aleatoric = fitted.predict(data["X_test"])
    assert mean.shape == epistemic.shape == aleatoric.shape == (len(data["X_test"]),)
    assert (epistemic >= 0).all() and (aleatoric > 0).all()
    assert spearmanr(mean, data["y_test"])[0] > 0.7


def far_points(n: int = 400) -> np.ndarray:
    return 3 * np.random.default_rng(1).normal(size=(n, D)).astype(np.float32)


def test_epistemic_std_is_larger_far_from_the_data(fitted, data):
    """1.10x here (1.07-1.15x over five data seeds); the teacher's own MC-dropout std grows about 1.25x."""
    assert fitted.predict(far_points())[1].mean() > 1.05 * fitted.predict(data["X"])[1].mean()


def test_student_ranks_points_like_the_teachers_mc_dropout_std(fitted, data):
    """0.39 here (0.39-0.57 over five data seeds); a student trained on the data points alone gets 0.05-0.34."""
    points = torch.tensor(np.concatenate([data["X"], data["X_test"][:200], far_points(200)]))
    teacher = fitted.nets["teacher"]
    teacher.train()
    with torch.no_grad():
        mc_std = torch.stack([teacher(points).squeeze(-1) for _ in range(1000)]).std(dim=0)
    teacher.eval()
    assert spearmanr(fitted.predict(points.numpy())[1], mc_std.numpy())[0] > 0.35


def test_aleatoric_std_follows_heteroscedastic_noise():
    """Noise std 0.12 where x0 > 0 and 0.01 elsewhere, on 2-d inputs (in 16-d, 100 points let the NPN memorise the noise)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)).astype(np.float32)
    y = 0.5 + 0.2 * np.tanh(x @ np.array([0.8, -0.6])) + np.where(x[:, 0] > 0, 0.12, 0.01) * rng.normal(size=100)
    surrogate = Surrogate(2, seed=0, max_epochs=50)  # enough to separate the two levels; 200 separates them further
    surrogate.fit(x, y)
    test = rng.normal(size=(1000, 2)).astype(np.float32)
    aleatoric = surrogate.predict(test)[2]
    noisy, clean = aleatoric[test[:, 0] > 0].mean(), aleatoric[test[:, 0] <= 0].mean()
    assert noisy > 1.5 * clean, (noisy, clean)


def test_torch_predict_is_differentiable_and_agrees_with_predict(fitted, data):
    x = torch.tensor(data["X_test"][:5], requires_grad=True)
    outputs = fitted.torch_predict(x)
    for output, expected in zip(outputs, fitted.predict(data["X_test"][:5]), strict=True):
        np.testing.assert_allclose(output.detach().numpy(), expected, rtol=1e-6)
    (grad,) = torch.autograd.grad(sum(o.sum() for o in outputs), x)
    assert grad.abs().sum() > 0
    assert all(p.grad is None for p in fitted.parameters())


def test_predict_in_chunks_matches_row_by_row(fitted):
    rows = np.random.default_rng(2).normal(size=(70_000, D)).astype(np.float32)  # more than one 65,536-row chunk
    mean, epistemic, aleatoric = fitted.predict(rows)
    for i in (0, 65_535, 65_536, 69_999):
        single = fitted.predict(rows[i:i + 1])
        np.testing.assert_allclose([mean[i], epistemic[i], aleatoric[i]], [s[0] for s in single], rtol=1e-5)


def small_problem(seed: int, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x, smooth_loss(x)


def test_equal_seeds_and_data_give_identical_surrogates(data):
    x, y = small_problem(3)
    runs = []
    for seed in (5, 5, 6):
        surrogate = Surrogate(D, seed=seed, max_epochs=8)
        surrogate.fit(x, y)
        runs.append(surrogate.predict(data["X_test"]))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


@pytest.mark.parametrize("prior_columns", [None, (4, D)])
def test_save_load_restores_everything_a_resumed_search_needs(tmp_path, data, prior_columns):
    first, second = small_problem(4), small_problem(5)
    original = Surrogate(D, seed=1, max_epochs=8, prior_columns=prior_columns)
    original.fit(*first)
    path = tmp_path / "surrogate.pt"
    original.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["surrogate.pt"]  # no temporary file left behind
    restored = Surrogate.load(path)
    assert restored.fit_count == original.fit_count == 1
    for a, b in zip(original.predict(data["X_test"]), restored.predict(data["X_test"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # The next fit continues identically: same split seed (fit count), optimizer moments and weights.
    original.fit(*second)
    restored.fit(*second)
    for a, b in zip(original.predict(data["X_test"]), restored.predict(data["X_test"]), strict=True):
        np.testing.assert_array_equal(a, b)


def additive_choices(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two leading noise columns, then three one-hot choices of three values each; the target adds one term per choice."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, 3, size=(rows, 3))
    x = np.concatenate([rng.normal(size=(rows, 2)), np.eye(3)[picks].reshape(rows, 9)], axis=1)
    effects = np.array([[0.0, 0.1, -0.1], [0.05, 0.0, 0.2], [-0.05, 0.0, 0.1]])
    return torch.tensor(x, dtype=torch.float32), torch.tensor(0.5 + effects[np.arange(3), picks].sum(axis=1), dtype=torch.float32)


def test_the_linear_prior_learns_additive_choices_from_few_scores_and_knows_what_it_has_not_seen():
    x, y = additive_choices(12, seed=0)
    prior = LinearPrior((2, 11))  # the choices only
    assert [t.tolist() for t in prior(x[:2])] == [[0.0, 0.0], [0.0, 0.0]]  # nothing before the first fit
    prior.fit(x, y)
    unseen, truth = additive_choices(200, seed=1)
    mean, variance = prior(unseen)
    assert spearmanr(mean.numpy(), truth.numpy())[0] > 0.9
    # The rarest value of every choice at once: less sure than of any model it was fitted on.
    counts = x[:, 2:].reshape(-1, 3, 3).sum(dim=0)
    rarest = torch.cat([torch.zeros(2), torch.eye(3)[counts.argmin(dim=1)].reshape(9)])[None]
    assert prior(rarest)[1].item() > prior(x)[1].max().item()
    point = unseen[:1].clone().requires_grad_(True)
    prior(point)[0].sum().backward()  # GOBI differentiates through the prior mean
    assert torch.count_nonzero(point.grad[0, :2]) == 0 and torch.count_nonzero(point.grad[0, 2:]) > 0


def test_with_a_prior_the_surrogate_predicts_the_teachers_residual_around_it():
    x, y = additive_choices(30, seed=2)
    surrogate = Surrogate(11, seed=0, max_epochs=30, prior_columns=(2, 11))
    surrogate.fit(x.numpy(), y.numpy())
    with torch.no_grad():
        prior_mean, prior_variance = surrogate.prior(x)
        teacher, student = (surrogate.nets[n](x).squeeze(-1) for n in ("teacher", "student"))
    mean, epistemic, _ = surrogate.predict(x.numpy())
    np.testing.assert_allclose(mean, (teacher - 0.5 + prior_mean).numpy(), atol=1e-6)
    np.testing.assert_allclose(epistemic, (student**2 + prior_variance).sqrt().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="prior columns"):
        Surrogate(11).load_state_dict(surrogate.state_dict())


def test_state_dict_is_a_snapshot():
    x, y = small_problem(6)
    surrogate = Surrogate(D, max_epochs=5)
    state = surrogate.state_dict()
    surrogate.fit(x, y)
    fresh = Surrogate(D, max_epochs=5)
    fresh.load_state_dict(state)
    assert fresh.fit_count == 0
    assert not np.array_equal(fresh.predict(x)[0], surrogate.predict(x)[0])


def test_fit_warm_starts_from_the_current_weights(data):
    x, y = small_problem(7)
    surrogate = Surrogate(D, seed=2, max_epochs=20, val_fraction=0.0)
    surrogate.fit(x, y)
    before = surrogate.predict(data["X_test"])
    surrogate.max_epochs = 0
    losses = surrogate.fit(x, y)
    after = surrogate.predict(data["X_test"])
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)  # not re-initialised
    assert losses["teacher_train"] == pytest.approx(np.mean((surrogate.predict(x)[0] - y) ** 2), rel=1e-5)
    untrained = Surrogate(D, seed=2, max_epochs=0, val_fraction=0.0).fit(x, y)
    assert losses["teacher_train"] < 0.5 * untrained["teacher_train"]


def test_fit_with_few_points_trains_on_all_and_skips_validation():
    x, y = small_problem(8, n=3)
    losses = Surrogate(D, max_epochs=3).fit(x, y)
    assert math.isnan(losses["teacher_val"]) and math.isfinite(losses["teacher_train"])
    assert losses["teacher_epochs"] == 3
    one = Surrogate(D, max_epochs=2).fit(x[:1], y[:1])
    assert math.isfinite(one["npn_train"])


def test_fit_rejects_bad_input():
    surrogate = Surrogate(D)
    with pytest.raises(ValueError, match="shape"):
        surrogate.fit(np.zeros((4, D + 1)), np.zeros(4))
    with pytest.raises(ValueError, match="targets"):
        surrogate.fit(np.zeros((4, D)), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        surrogate.fit(np.full((4, D), np.nan), np.zeros(4))


# ----------------------------------------------------------------------------------------------- GOBI


def test_acquisition_on_numpy_and_torch():
    mean, ep, al = np.array([0.5, 0.2]), np.array([0.1, 0.3]), np.array([0.2, 0.0])
    np.testing.assert_allclose(acquisition(mean, ep, al), [0.45, 0.05])
    np.testing.assert_allclose(acquisition(mean, ep, al, k1=1.0, k2=2.0, use_aleatoric=True), [0.0, -0.1])
    as_torch = acquisition(*(torch.tensor(a) for a in (mean, ep, al)), use_aleatoric=True)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), [0.35, 0.05])


def library_box(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = data["X_test"][:8]
    return starts, data["X_test"].min(axis=0), data["X_test"].max(axis=0)


def acquisition_of(surrogate: Surrogate, points: np.ndarray, **kwargs) -> np.ndarray:
    return acquisition(*surrogate.predict(points), **kwargs)


@pytest.mark.parametrize("second_order, use_aleatoric", [(True, False), (False, False), (True, True)])
def test_gobi_improves_every_row_within_bounds_without_touching_the_surrogate(fitted, data, second_order, use_aleatoric):
    starts, lower, upper = library_box(data)
    weights = [p.detach().clone() for p in fitted.parameters()]
    points = gobi(fitted, starts, lower, upper, second_order=second_order, use_aleatoric=use_aleatoric, max_iters=50)
    assert points.shape == starts.shape
    assert ((points >= lower - 1e-6) & (points <= upper + 1e-6)).all()
    start_z = acquisition_of(fitted, starts, use_aleatoric=use_aleatoric)
    end_z = acquisition_of(fitted, points, use_aleatoric=use_aleatoric)
    assert (end_z <= start_z + 1e-7).all()
    assert (end_z < start_z - 1e-4).mean() >= 0.5  # most rows really moved downhill
    assert all(torch.equal(a, b.detach()) and b.grad is None for a, b in zip(weights, fitted.parameters(), strict=True))


def test_gobi_is_reproducible(fitted, data):
    starts, lower, upper = library_box(data)
    np.testing.assert_array_equal(gobi(fitted, starts, lower, upper, max_iters=20, seed=3),
                                  gobi(fitted, starts, lower, upper, max_iters=20, seed=3))


class FakeSurrogate:
    """A stand-in with a known per-row mean (the acquisition, as the uncertainties are 0), so the optimum is known."""

    def __init__(self, mean):
        self.mean = mean

    def torch_predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(len(x))
        return self.mean(x), zeros, zeros


def test_gobi_converged_rows_stop_moving():
    lower, upper = -np.ones(2), np.ones(2)
    slopes = np.array([[1.0, 1.0], [1.0, 1.0], [1e-7, 0.0]])
    starts = np.array([[0.0, 0.0], [-1.0, -1.0], [0.0, 0.0]])
    slopes_t = torch.tensor(slopes, dtype=torch.float32)
    points = gobi(FakeSurrogate(lambda x: (x * slopes_t).sum(1)), starts, lower, upper, second_order=False, lr=0.01, patience=5)
    np.testing.assert_allclose(points[0], [-1.0, -1.0])  # kept going until it reached the corner (100+ steps)
    np.testing.assert_array_equal(points[1], starts[1])  # started at the minimum: never moved
    # Row 2 changes its acquisition by 1e-16 per step, converges after 5 steps and is then frozen;
    # without the mask it would have drifted 1e-9 per step for the 100+ steps row 0 needs.
    assert 0 < -points[2, 0] <= 7 * 0.01 * 1e-7


def test_gobi_second_order_finds_the_minimum_of_a_badly_scaled_quadratic():
    centre, curvature = torch.tensor([0.3, -0.2]), torch.tensor([100.0, 0.1])
    fake = FakeSurrogate(lambda x: (curvature * (x - centre) ** 2).sum(1))
    starts = np.array([[0.9, 0.9], [-0.9, 0.5]])
    points = gobi(fake, starts, -np.ones(2), np.ones(2), max_iters=200, tol=1e-9)
    np.testing.assert_allclose(points, np.tile(centre.numpy(), (2, 1)), atol=1e-2)


# ------------------------------------------------------------------------------------- library snap


def brute_force_nearest(points, library, allowed, metric):
    difference = points[:, None] - library[None]
    distance = np.abs(difference).mean(-1) if metric == "l1" else np.linalg.norm(difference, axis=-1)
    distance[:, ~allowed] = np.inf
    return distance.argmin(axis=1)


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_snap_matches_brute_force_and_respects_allowed(metric):
    rng = np.random.default_rng(0)
    library = rng.normal(size=(500, D))
    allowed = rng.random(500) < 0.3
    points = np.concatenate([rng.normal(size=(6, D)), library[[np.flatnonzero(~allowed)[0]]]])
    expected = brute_force_nearest(points, library, allowed, metric)
    found = snap_to_library(points, library, allowed, metric=metric)
    np.testing.assert_array_equal(found, expected)
    assert allowed[found].all()
    exact = np.flatnonzero(allowed)[[3, 3, 10]]
    np.testing.assert_array_equal(snap_to_library(library[exact], library, allowed, metric=metric), exact)


def test_snap_rejects_empty_allowed_set_and_unknown_metric():
    library = np.zeros((4, 2))
    with pytest.raises(ValueError, match="no library row"):
        snap_to_library(np.zeros((1, 2)), library, np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="metric"):
        snap_to_library(np.zeros((1, 2)), library, np.ones(4, dtype=bool), metric="cosine")
