"""The guard pipeline's stages: one small class per guard and per action (see ``base.Stage``)."""

from obliviate.guards.stages.actions import Contrastive, Refuse, Rewrite, Suppress
from obliviate.guards.stages.base import Stage
from obliviate.guards.stages.output import OutputGuard
from obliviate.guards.stages.prompt import LexicalMatch, SemanticMatch, conversation_texts

__all__ = [
    "Contrastive",
    "LexicalMatch",
    "OutputGuard",
    "Refuse",
    "Rewrite",
    "SemanticMatch",
    "Stage",
    "Suppress",
    "conversation_texts",
]
