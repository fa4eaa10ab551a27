"""The BOSHNAS surrogate: embedding -> (predicted normalised loss, epistemic std, aleatoric std).

Three small networks, trained in turn on every ``fit``, as in the original with its bugs fixed:

- teacher: an MLP with dropout, trained with MSE; its dropout-free output (the usual weight-scaling
  approximation of the MC-dropout mean) is the predicted loss;
- student: the same MLP without dropout, trained to predict the standard deviation of ``mc_samples``
  dropout samples of the teacher (its epistemic uncertainty), so that GOBI gets it in one differentiable pass;
- npn: a Natural-Parameter Network trained with the Gaussian likelihood, whose output variance is the
  heteroscedastic (aleatoric) noise; its square root is reported, so both uncertainties are standard deviations.

With ``prior_columns`` a Bayesian linear model on those input columns (the model dict's choices) is the
prior mean (linear_prior.py): the teacher learns the residual, around 0.5 so that its sigmoid stays
in its linear range, the predicted loss is the sum, and the linear model's posterior variance joins the
student's in the epistemic std (why: linear_prior.py).

Training choices (the original trained each net with batch size 1; here everything is batched, and the
rates below were measured to train 50-200 points to early stopping well inside ``max_epochs=200``):

- teacher: AdamW at 8*lr (the original 2*lr times 4, about sqrt(batch_size): Adam's normalised steps
  need less than the linear scaling of SGD).
- student: AdamW at 8*lr instead of the original plain SGD. Its targets are small (about 0.05), so the
  sigmoid's gradients are about 1e-3 and SGD at any stable rate did not learn how the std varies; its
  output bias starts at the first fit's mean target, since from 0.5 the first epoch overshoots deep into
  the sigmoid's tail. It trains on the data plus ``_STUDENT_EXTRA_POINTS`` unlabelled points spread over
  the data's widened bounding box (its target needs no label), and draws fresh dropout targets for every
  batch, as the original did, which averages out their noise.
- npn: AdamW at lr for the means and 30*lr, without weight decay (which would pull them towards
  softplus(0) = 0.69), for the raw variances (the original used 0.05*lr and decay 0.01 for all).
  The original's initialisation puts the variances about 6 units (in softplus space) below where
  heteroscedastic noise needs them, and Adam moves a parameter at most about lr per step: at 1e-3 the
  NPN learnt no input-dependent noise in 400 epochs, at 3e-2 for the variances it does in about 30.
- Each fit draws ONE train/validation split (seeded from ``seed`` and the number of earlier fits; fix C17),
  runs each net for at least ``_MIN_EPOCHS`` epochs (the NPN first has to leave a plateau), then stops after
  ``patience`` epochs without a new best validation loss and keeps the weights of its best epoch.
- Networks and optimizer states persist across fits (warm start). All randomness runs under a forked
  torch RNG seeded from ``seed``, so equal seeds and data give identical surrogates.

Limits measured on 16-d inputs: with 60 points the student's epistemic std tracks the teacher's MC std
only loosely, and the NPN cannot tell heteroscedastic noise from signal even with 200 points (it
memorises the noise); on 2-d inputs with 100 points it recovers the noise level. The original's sigmoid
moment approximation gives even a noise-free output a variance of about 0.0126 at mean 0.5, so the
aleatoric std hardly drops below about 0.1 there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flexibert.search.boshnas.linear_prior import LinearPrior
from flexibert.search.boshnas.npn import NPN, aleatoric_loss
from flexibert.utils.files import atomic_write

_ADAM_LR_SCALE = 4.0
_NPN_VARIANCE_LR_SCALE = 30.0
_MIN_EPOCHS = 25
_MIN_POINTS_FOR_VALIDATION = 5
_STUDENT_EXTRA_POINTS = 128
_PREDICT_CHUNK = 1 << 16
_NETS = ("teacher", "student", "npn")
_RESIDUAL_CENTRE = 0.5  # with a prior, the teacher learns target - prior around this: the middle of its sigmoid

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _mlp(input_dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(input_dim, 64), nn.Softplus()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(64, 32), nn.Softplus()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(32, 1), nn.Sigmoid()]
    return nn.Sequential(*layers)


def _mse(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((net(x).squeeze(-1) - target) ** 2).mean()


def _npn_loss(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return aleatoric_loss(*net(x), target)


def _derived_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _train_net(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    train_idx: torch.Tensor,
    val_idx: torch.Tensor,
    max_epochs: int,
    batch_size: int,
    patience: int,
    fresh_targets: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float, int]:
    """Mini-batch training with early stopping on the fixed validation rows; returns (train loss, val loss, epochs run).

    Losses are measured in eval mode (dropout off) against ``y``. With validation rows, the weights of the best
    epoch (possibly the starting weights) are kept; without, training runs ``max_epochs`` epochs.
    ``fresh_targets(x_batch)``, if given, replaces ``y`` for the training batches (a new noisy target each time).
    """

    def evaluate(idx: torch.Tensor) -> float:
        if len(idx) == 0:
            return math.nan
        net.eval()
        with torch.no_grad():
            return loss_fn(net, x[idx], y[idx]).item()

    validating = len(val_idx) > 0
    best_val, best_state, best_epoch = evaluate(val_idx), copy.deepcopy(net.state_dict()), 0
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = train_idx[torch.randperm(len(train_idx))]
        for batch in order.split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            batch_y = y[batch] if fresh_targets is None else fresh_targets(x[batch])
            loss_fn(net, x[batch], batch_y).backward()
            optimizer.step()
        if not validating:
            continue
        val = evaluate(val_idx)
        if val < best_val:
            best_val, best_state, best_epoch = val, copy.deepcopy(net.state_dict()), epoch
        elif epoch - best_epoch >= patience and epoch >= _MIN_EPOCHS:
            break
    optimizer.zero_grad(set_to_none=True)  # no stale gradients kept between fits
    if validating:
        net.load_state_dict(best_state)
    net.eval()
    return evaluate(train_idx), evaluate(val_idx), epoch


class Surrogate:
    """Teacher (MC-dropout mean) + student (epistemic std) + NPN (heteroscedastic aleatoric) on embeddings.

    Targets y are normalised LOSSES (lower is better), roughly in [0, 1]: every network ends in a sigmoid.
    """

    def __init__(
        self,
        input_dim: int,
        seed: int = 0,
        lr: float = 1e-3,
        max_epochs: int = 200,
        batch_size: int = 16,
        val_fraction: float = 0.2,
        mc_samples: int = 10,
        patience: int = 7,
        prior_columns: tuple[int, int] | list[int] | None = None,
    ):
        if mc_samples < 2:
            raise ValueError(f"mc_samples must be at least 2 to estimate a standard deviation, got {mc_samples}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.input_dim, self.seed, self.lr, self.max_epochs, self.batch_size = input_dim, seed, lr, max_epochs, batch_size
        self.val_fraction, self.mc_samples, self.patience = val_fraction, mc_samples, patience
        self.fit_count = 0
        self.prior = LinearPrior(tuple(prior_columns)) if prior_columns is not None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed))
            self.nets: dict[str, nn.Module] = {"teacher": _mlp(input_dim, 0.3), "student": _mlp(input_dim, 0.0), "npn": NPN(input_dim)}
        for net in self.nets.values():
            net.eval()
        npn = self.nets["npn"]
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "teacher": torch.optim.AdamW(self.nets["teacher"].parameters(), lr=2 * lr * _ADAM_LR_SCALE, weight_decay=0.01, foreach=True),
            "student": torch.optim.AdamW(self.nets["student"].parameters(), lr=2 * lr * _ADAM_LR_SCALE, weight_decay=0.01, foreach=True),
            "npn": torch.optim.AdamW(
                [{"params": npn.mean_parameters()},
                 {"params": npn.variance_parameters(), "lr": _NPN_VARIANCE_LR_SCALE * lr, "weight_decay": 0.0}],
                lr=lr, weight_decay=0.01, foreach=True,
            ),
        }

    @property
    def config(self) -> dict:
        """The constructor's arguments, as ``save`` records them."""
        return {
            "input_dim": self.input_dim, "seed": self.seed, "lr": self.lr, "max_epochs": self.max_epochs, "batch_size": self.batch_size,
            "val_fraction": self.val_fraction, "mc_samples": self.mc_samples, "patience": self.patience,
            "prior_columns": None if self.prior is None else [self.prior.columns.start, self.prior.columns.stop],
        }

    def parameters(self) -> Iterator[nn.Parameter]:
        for net in self.nets.values():
            yield from net.parameters()

    def _as_inputs(self, X: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(X, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected inputs of shape (n, {self.input_dim}), got {tuple(x.shape)}")
        return x

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(n)
        n_val = max(1, round(self.val_fraction * n)) if n >= _MIN_POINTS_FOR_VALIDATION and self.val_fraction > 0 else 0
        return order[n_val:], order[:n_val]

    def _student_inputs(self, x: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The data plus unlabelled points drawn uniformly from the data's bounding box widened by half its range.

        The student's target needs no label, so it can also learn the teacher's uncertainty away from the data;
        trained on the data alone it extrapolates blindly and can report less uncertainty far from the data than on it.
        """
        low, high = x.min(dim=0).values, x.max(dim=0).values
        margin = 0.5 * (high - low)
        points = (low - margin) + (high - low + 2 * margin) * torch.rand(_STUDENT_EXTRA_POINTS, x.shape[1])
        n_val = round(self.val_fraction * _STUDENT_EXTRA_POINTS) if len(val_idx) else 0
        extra_idx = torch.arange(len(x), len(x) + _STUDENT_EXTRA_POINTS)
        return torch.cat([x, points]), torch.cat([train_idx, extra_idx[n_val:]]), torch.cat([val_idx, extra_idx[:n_val]])

    def _teacher_std(self, x: torch.Tensor) -> torch.Tensor:
        """Std over ``mc_samples`` dropout passes: the student's target, computed without a graph (fix C18)."""
        teacher = self.nets["teacher"]
        was_training = teacher.training
        teacher.train()
        with torch.no_grad():
            samples = teacher(x.repeat(self.mc_samples, 1)).view(self.mc_samples, len(x))
        teacher.train(was_training)
        return samples.std(dim=0)

    def _start_student_at(self, value: torch.Tensor) -> None:
        """Set the student's output bias so it starts at the typical target (about 0.05) instead of 0.5.

        From 0.5 the first epoch overshoots deep into the sigmoid's flat tail, and the slow way back
        looks like a plateau to early stopping.
        """
        with torch.no_grad():
            self.nets["student"][-2].bias.fill_(torch.logit(value.clamp(1e-4, 0.5)).item())

    def fit(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Train teacher, student and npn in turn from their current weights.

        Returns ``{net}_train`` and ``{net}_val`` (the losses of the kept weights; val is NaN with fewer than
        5 points, which are all used for training) and ``{net}_epochs`` for each network.
        """
        x = self._as_inputs(X)
        target = torch.as_tensor(np.asarray(y, dtype=np.float32).reshape(-1))
        if len(target) != len(x) or len(x) == 0:
            raise ValueError(f"need as many targets as inputs (at least one), got {len(target)} and {len(x)}")
        if not (torch.isfinite(x).all() and torch.isfinite(target).all()):
            raise ValueError("inputs and targets must be finite")
        result: dict[str, float] = {}
        teacher_target = target
        if self.prior is not None:
            self.prior.fit(x, target)
            teacher_target = (_RESIDUAL_CENTRE + target - self.prior(x)[0]).clamp(0.01, 0.99)

        def train(name: str, loss_fn: LossFn, inputs, targets, train_rows, val_rows, fresh_targets=None) -> None:
            losses = _train_net(self.nets[name], self.optimizers[name], loss_fn, inputs, targets, train_rows, val_rows,
                                self.max_epochs, self.batch_size, self.patience, fresh_targets)
            result.update(zip((f"{name}_train", f"{name}_val", f"{name}_epochs"), map(float, losses), strict=True))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(self.seed, self.fit_count))
            train_idx, val_idx = self._split(len(x))
            train("teacher", _mse, x, teacher_target, train_idx, val_idx)
            student_x, student_train, student_val = self._student_inputs(x, train_idx, val_idx)
            student_y = self._teacher_std(student_x)
            if self.fit_count == 0:
                self._start_student_at(student_y.mean())
            train("student", _mse, student_x, student_y, student_train, student_val, fresh_targets=self._teacher_std)
            train("npn", _npn_loss, x, target, train_idx, val_idx)
        self.fit_count += 1
        return result

    def torch_predict(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, epistemic std, aleatoric std), each (n,), differentiable w.r.t. ``X``; nets in eval mode."""
        for net in self.nets.values():
            net.eval()
        _, aleatoric_var = self.nets["npn"](X)
        teacher, student = self.nets["teacher"](X).squeeze(-1), self.nets["student"](X).squeeze(-1)
        if self.prior is None:
            return teacher, student, aleatoric_var.sqrt()
        prior_mean, prior_variance = self.prior(X)
        return teacher - _RESIDUAL_CENTRE + prior_mean, (student**2 + prior_variance).sqrt(), aleatoric_var.sqrt()

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, epistemic std, aleatoric std) as float64 arrays of shape (n,), in chunks of 65,536 rows."""
        x = self._as_inputs(X)
        outputs: list[tuple[torch.Tensor, ...]] = []
        with torch.no_grad():
            for chunk in x.split(_PREDICT_CHUNK):
                outputs.append(self.torch_predict(chunk))
        if not outputs:
            return tuple(np.zeros(0) for _ in range(3))
        mean, epistemic, aleatoric = (torch.cat(parts).double().numpy() for parts in zip(*outputs, strict=True))
        return mean, epistemic, aleatoric

    def state_dict(self) -> dict:
        """A deep copy (later fits do not change it): config, fit count, and the nets' and optimizers' states."""
        return copy.deepcopy({
            "config": self.config,
            "fit_count": self.fit_count,
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "prior": {} if self.prior is None else self.prior.tensors,
        })

    def load_state_dict(self, state: dict) -> None:
        if state["config"]["input_dim"] != self.input_dim:
            raise ValueError(f"state is for input_dim {state['config']['input_dim']}, this surrogate has {self.input_dim}")
        if state["config"].get("prior_columns") != self.config["prior_columns"]:
            raise ValueError(f"state has prior columns {state['config'].get('prior_columns')}, "
                             f"this surrogate {self.config['prior_columns']}")
        for name in _NETS:
            self.nets[name].load_state_dict(state["nets"][name])
            self.optimizers[name].load_state_dict(state["optimizers"][name])
        self.fit_count = int(state["fit_count"])
        if self.prior is not None:
            self.prior.tensors = dict(state["prior"])

    def save(self, path: str | Path) -> None:
        """Write atomically (:func:`flexibert.utils.files.atomic_write`), so a crash never leaves half a file."""
        with atomic_write(path, "wb") as handle:
            torch.save(self.state_dict(), handle)

    @classmethod
    def load(cls, path: str | Path) -> Surrogate:
        state = torch.load(Path(path), weights_only=True)
        surrogate = cls(**state["config"])
        surrogate.load_state_dict(state)
        return surrogate
