"""Search strategies behind one interface (base.py); importing the package registers every strategy in STRATEGIES."""

from flexibert.search.strategies.base import STRATEGIES, SearchContext, Strategy, random_available
from flexibert.search.strategies.boshnas import Boshnas, BoshnasSettings
from flexibert.search.strategies.evolution import EvolutionSettings, RegularizedEvolution
from flexibert.search.strategies.gp import GaussianProcessBO
from flexibert.search.strategies.random_search import RandomSearch
from flexibert.search.strategies.tpe import NSGAII, TreeParzenEstimator

__all__ = [
    "STRATEGIES", "Boshnas", "BoshnasSettings", "EvolutionSettings", "GaussianProcessBO", "NSGAII", "RandomSearch", "RegularizedEvolution",
    "SearchContext", "Strategy", "TreeParzenEstimator", "random_available",
]
