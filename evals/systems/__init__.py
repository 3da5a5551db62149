"""Systems under evaluation (see :mod:`evals.systems.base`)."""

from evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem, System

__all__ = ["ChatItem", "Generation", "ScoreItem", "ScoredAnswer", "System"]
