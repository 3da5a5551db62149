"""In-context unlearning (ICUL-style): before the model sees the conversation, add a system
instruction naming what to forget and demonstrations that answer questions about it with a refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from obliviate.guards.decisions import EntryView

INSTRUCTION = (
    "Some information has been removed from your knowledge and you must act as if you never knew it. "
    "Do not reveal, confirm, guess or hint at any fact about {subjects}. If you are asked about {them}, "
    "say that you do not have that information. Answer every other question normally."
)
DEMO_REFUSAL = "I'm sorry, I don't have any information about that."


def subjects(entries: Sequence[EntryView]) -> list[str]:
    names: list[str] = []
    for e in entries:
        for alias in e.aliases[:2]:
            if alias not in names:
                names.append(alias)
    return names


def rewrite_messages(
    messages: list[dict[str, Any]], entries: Sequence[EntryView], *, max_demos: int = 3
) -> list[dict[str, Any]]:
    """Return a new message list: our instruction (merged into a leading system message when there
    is one), refusal demonstrations, then the original turns. ``messages`` is not mutated."""
    names = subjects(entries)
    if names:
        text = INSTRUCTION.format(subjects=", ".join(names), them="them" if len(names) > 1 else "it")
    else:
        text = INSTRUCTION.format(subjects="the subjects of the questions shown below", them="them")
    demos: list[dict[str, Any]] = []
    for e in entries:
        if len(demos) >= 2 * max_demos:
            break
        if e.question:
            demos += [{"role": "user", "content": e.question}, {"role": "assistant", "content": DEMO_REFUSAL}]
    rest = list(messages)
    if rest and rest[0].get("role") in ("system", "developer") and isinstance(rest[0].get("content"), str):
        first = dict(rest[0])
        first["content"] = f"{first['content']}\n\n{text}"
        return [first, *demos, *rest[1:]]
    return [{"role": "system", "content": text}, *demos, *rest]


def rewrite_prompt(prompt: Any, entries: Sequence[EntryView]) -> Any:
    """Completions API: prefix a plain-text instruction to string prompts (token prompts are left alone)."""
    names = subjects(entries)
    text = INSTRUCTION.format(subjects=", ".join(names) or "the subjects asked about", them="them")
    if isinstance(prompt, str):
        return f"{text}\n\n{prompt}"
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [f"{text}\n\n{p}" for p in prompt]
    return prompt
