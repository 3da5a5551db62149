"""Systems under evaluation (see :mod:`obliviate.evals.systems.base`)."""

from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem, System

__all__ = ["ChatItem", "Generation", "ScoreItem", "ScoredAnswer", "System"]
