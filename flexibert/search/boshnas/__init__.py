"""BOSHNAS: a surrogate with epistemic and aleatoric uncertainty, and GOBI, gradient-based search over its inputs."""

from flexibert.search.boshnas.adahessian import AdaHessian
from flexibert.search.boshnas.gobi import acquisition, gobi, snap_to_library
from flexibert.search.boshnas.surrogate import Surrogate

__all__ = ["AdaHessian", "Surrogate", "acquisition", "gobi", "snap_to_library"]
