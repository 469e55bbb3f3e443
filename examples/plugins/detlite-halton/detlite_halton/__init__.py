"""detlite-halton: quasi-random hyperparameter search for detlite."""

from detlite_halton.search import HaltonConfig, HaltonSearch

__all__ = ["HaltonConfig", "HaltonSearch"]
