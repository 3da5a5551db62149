"""Attack suite (issue #6): does a system still reveal forgotten TOFU facts when the question is
paraphrased, spread over turns, translated, has the name obfuscated, carries a prompt injection,
or asks to complete the answer?

``build_cases`` turns forget QA records into :class:`AttackCase`\\ s (:mod:`obliviate.evals.attacks.builders`),
``run_attacks`` generates through a :class:`~evals.systems.base.System` and judges each answer with
the leak rule of :mod:`obliviate.evals.attacks.runner`, ``write_attacks`` writes ``ATTACKS.json``.
"""

from obliviate.evals.attacks.builders import ATTACKS, DIRECT, AttackCase, build_cases
from obliviate.evals.attacks.runner import ATTACKS_FILE, LEAK_RULE, judge, leaked, run_attacks, write_attacks

__all__ = [
    "ATTACKS",
    "ATTACKS_FILE",
    "DIRECT",
    "LEAK_RULE",
    "AttackCase",
    "build_cases",
    "judge",
    "leaked",
    "run_attacks",
    "write_attacks",
]
