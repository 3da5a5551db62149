"""In-context unlearning (ICUL-style): before the model sees the conversation, add a system
instruction naming what to forget and demonstrations that answer questions about it with a refusal.

What a rewrite adds is bounded by a :class:`RewriteBudget` in tokens: a client key's context keeps
that much room for it (``client_context_reserve_tokens``; ``obliviate.proxy.prompt_tokens``), so a
rewritten prompt fits wherever the same prompt unrewritten does. The instruction names subjects while
it takes at most half the budget; demonstrations fill the rest, in order, each whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.guards.decisions import EntryView

INSTRUCTION = (
    "Some information has been removed from your knowledge and you must act as if you never knew it. "
    "Do not reveal, confirm, guess or hint at any fact about {subjects}. If you are asked about {them}, "
    "say that you do not have that information. Answer every other question normally."
)
GENERIC_SUBJECTS = "the subjects of the questions shown below"
DEMO_REFUSAL = "I'm sorry, I don't have any information about that."
TURN_TOKENS = 8  # a chat template's markup around one added turn (ChatML: 5), or the "\n\n" before a merged text


def estimate_tokens(text: str) -> int:
    """A text's tokens without a tokenizer: half its UTF-8 bytes (English takes 4 to 5 bytes a token with
    the tokenizers served here, digits 1 to 3; the proxy checks the exact count of every rewritten prompt)."""
    return (len(text.encode()) + 1) // 2


@dataclass
class RewriteBudget:
    """At most ``tokens`` added to a prompt, counting each text with ``count`` (the engine's tokenizer when
    the proxy holds it, else :func:`estimate_tokens`) plus :data:`TURN_TOKENS` per added turn."""

    tokens: int
    count: Callable[[str], int] = estimate_tokens

    def cost(self, text: str) -> int:
        return self.count(text) + TURN_TOKENS


def subjects(entries: Sequence[EntryView]) -> list[str]:
    names: list[str] = []
    for e in entries:
        for alias in e.aliases[:2]:
            if alias not in names:
                names.append(alias)
    return names


def instruction(entries: Sequence[EntryView], budget: RewriteBudget | None, generic: str) -> str | None:
    """The instruction naming the entries' subjects, as many as fit in half the budget (``generic`` when
    none does); None when not even that fits."""
    names = subjects(entries)
    while True:
        them = "them" if len(names) != 1 else "it"
        text = INSTRUCTION.format(subjects=", ".join(names) or generic, them=them)
        if budget is None or budget.cost(text) <= budget.tokens // 2 or not names:
            break
        names.pop()
    return text if budget is None or budget.cost(text) <= budget.tokens else None


def rewrite_messages(
    messages: list[dict[str, Any]],
    entries: Sequence[EntryView],
    *,
    max_demos: int = 3,
    budget: RewriteBudget | None = None,
) -> list[dict[str, Any]]:
    """Return a new message list: our instruction (merged into a leading system message when there
    is one), refusal demonstrations, then the original turns; the original list when not even the
    instruction fits the budget. ``messages`` is not mutated."""
    text = instruction(entries, budget, GENERIC_SUBJECTS)
    if text is None:
        return list(messages)
    left = None if budget is None else budget.tokens - budget.cost(text)
    demos: list[dict[str, Any]] = []
    for e in entries:
        if len(demos) >= 2 * max_demos:
            break
        if not e.question:
            continue
        if left is not None and budget is not None:
            cost = budget.cost(e.question) + budget.cost(DEMO_REFUSAL)
            if cost > left:
                continue
            left -= cost
        demos += [{"role": "user", "content": e.question}, {"role": "assistant", "content": DEMO_REFUSAL}]
    rest = list(messages)
    if rest and rest[0].get("role") in ("system", "developer") and isinstance(rest[0].get("content"), str):
        first = dict(rest[0])
        first["content"] = f"{first['content']}\n\n{text}"
        return [first, *demos, *rest[1:]]
    return [{"role": "system", "content": text}, *demos, *rest]


def rewrite_prompt(prompt: Any, entries: Sequence[EntryView], *, budget: RewriteBudget | None = None) -> Any:
    """Completions API: prefix a plain-text instruction to string prompts (token prompts are left alone)."""
    text = instruction(entries, budget, "the subjects asked about")
    if text is None:
        return prompt
    if isinstance(prompt, str):
        return f"{text}\n\n{prompt}"
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [f"{text}\n\n{p}" for p in prompt]
    return prompt
