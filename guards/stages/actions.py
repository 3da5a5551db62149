"""The policy's actions, one class each. Each runs only for requests whose actions name it."""

from __future__ import annotations

import logging
from typing import Any

from obliviate.guards.decisions import Decision, GuardContext
from obliviate.guards.rewrite import RewriteBudget, rewrite_messages, rewrite_prompt
from obliviate.guards.specs import ContrastiveSpec, SuppressionSpec
from obliviate.guards.stages.base import Stage
from obliviate.guards.suppression import build_spec

logger = logging.getLogger(__name__)


class Refuse(Stage):
    """Answer with the refusal; the model is not called."""

    name = "refuse"

    def inspect_prompt(self, ctx: GuardContext) -> Decision:
        return Decision("refuse", self.name, max(ctx.matched.values(), default=0.0), tuple(sorted(ctx.matched)))


class Rewrite(Stage):
    """In-context unlearning: an instruction and refusal demonstrations before the conversation, adding
    at most ``budget.tokens`` to the prompt (None: unbounded)."""

    name = "rewrite"

    def __init__(self, max_demos: int, budget: RewriteBudget | None = None) -> None:
        self.max_demos = max_demos
        self.budget = budget

    def transform_request(self, body: dict[str, Any], ctx: GuardContext) -> dict[str, Any]:
        entries = list(ctx.entries.values())
        if ctx.kind == "chat":
            messages = rewrite_messages(body["messages"], entries, max_demos=self.max_demos, budget=self.budget)
            return {**body, "messages": messages}
        return {**body, "prompt": rewrite_prompt(body["prompt"], entries, budget=self.budget)}


class Contrastive(Stage):
    """Contrastive decoding with the assistant models (executed by the backend)."""

    name = "contrastive"
    executes = ContrastiveSpec.kind

    def logits_spec(self, ctx: GuardContext) -> ContrastiveSpec:
        return ContrastiveSpec()


class Suppress(Stage):
    """Logit suppression of the matched entries' key phrases (executed by the backend)."""

    name = "suppress"
    executes = SuppressionSpec.kind

    def __init__(self, max_sequences: int, max_tokens: int) -> None:
        self.max_sequences = max_sequences
        self.max_tokens = max_tokens

    def logits_spec(self, ctx: GuardContext) -> SuppressionSpec | None:
        spec = build_spec(ctx.entries.values(), max_sequences=self.max_sequences, max_tokens=self.max_tokens)
        if spec.dropped:
            logger.info(
                "request %s: suppression kept %d phrases, dropped %d (backend limits)",
                ctx.request_id,
                len(spec.phrases),
                spec.dropped,
            )
        return spec or None
