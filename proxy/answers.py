"""Answers to score: a conversation and an answer as token ids (the chat template, the answer ending at
the end-of-turn token), and the teacher-forced scores of one answer.

The serving core (``obliviate.proxy.scoring``) and the layers above it (training data in
``obliviate.unlearn.data``, the evaluated systems in ``obliviate.evals.systems``) share these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def content_text(content: Any) -> str:
    """A chat message's text (text parts joined), as the chat template receives it."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": content_text(m.get("content"))} for m in messages]


def encode_answer(tokenizer: Any, messages: list[dict[str, Any]], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of ``answer`` as the assistant's reply to ``messages``: the prompt is
    the chat template with the generation prompt; the answer's ids end at the end-of-turn token."""
    chat = [*messages, {"role": "assistant", "content": answer}]
    prompt_text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(chat, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    return list(prompt_ids), end_at_eos(tokenizer, answer_ids)


def end_at_eos(tokenizer: Any, answer_ids: list[int]) -> list[int]:
    """End the answer at its end-of-turn token (what generation stops on), dropping what a template
    puts after it; without one the EOS is appended, as open-unlearning does."""
    eos = tokenizer.eos_token_id
    answer_ids = list(answer_ids)
    return answer_ids[: answer_ids.index(eos) + 1] if eos in answer_ids else [*answer_ids, eos]


@dataclass
class ScoredAnswer:
    """Teacher-forced scores of one answer, one entry per answer token (the answer's tokens followed
    by the end-of-turn token, as :func:`obliviate.unlearn.data.encode_qa` labels them).

    ``logprobs[i]``: log p(token i | conversation, tokens < i) under the system's final (intervened)
    distribution; ``argmax[i]``: that distribution's most likely token; ``mu[i]``/``var[i]``: mean and
    variance of log p under p (Min-K%++ inputs; empty when not asked for).
    """

    scored: bool
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    argmax: list[int] = field(default_factory=list)
    mu: list[float] = field(default_factory=list)
    var: list[float] = field(default_factory=list)
    action: str = "pass"  # what the system did to this item: pass / refuse / rewrite / suppress / ...
    reason: str | None = None  # why it was not scored

    @property
    def avg_loss(self) -> float | None:
        """Mean answer-token NLL (open-unlearning's ``avg_loss``); None when not scored."""
        if not self.scored or not self.logprobs:
            return None
        return -sum(self.logprobs) / len(self.logprobs)
