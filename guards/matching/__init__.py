"""The alias matching cascade (issue #19): cheap views of a text, each one automaton pass, plus name parts
with fuzzy and phonetic candidates. :class:`obliviate.guards.aliases.AliasMatcher` is the entry point."""

from obliviate.guards.matching.views import STAGES

__all__ = ["STAGES"]
