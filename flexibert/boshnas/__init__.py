"""BOSHNAS: a surrogate with epistemic and aleatoric uncertainty, and GOBI, gradient-based search over its inputs."""

from flexibert.boshnas.adahessian import AdaHessian
from flexibert.boshnas.gobi import acquisition, gobi, snap_to_library
from flexibert.boshnas.surrogate import Surrogate

__all__ = ["AdaHessian", "Surrogate", "acquisition", "gobi", "snap_to_library"]
