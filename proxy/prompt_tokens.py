"""What a client key sees of the model's context: its own prompt's tokens, and a fixed context.

The guards may lengthen a prompt (the rewrite adds an instruction and demonstrations). Were the
engine's numbers passed on, a client could tell that its request was rewritten, that is that it named
something in the forget set: from ``usage.prompt_tokens``, from the engine's 400 when ``max_tokens``
nearly fills the context, and from how many tokens an ``ignore_eos`` request without ``max_tokens``
gets. So, for client keys, whether or not the guards touch the request:

- the proxy counts the prompt the client sent, exactly as the engine counts it (P);
- clients get a context of C = the engine's ``max_model_len`` less ``client_context_reserve_tokens``,
  the room a rewrite may take (:class:`obliviate.guards.rewrite.RewriteBudget` keeps it there);
- P + ``max_tokens`` over C is a 400 the proxy answers with the client's own numbers; without
  ``max_tokens`` the engine is sent C - P (or its own default when smaller);
- ``usage.prompt_tokens`` is P.

How the engine's count is obtained: the transformers backend counts with its own code; a vLLM engine
is asked (``POST /tokenize``, which renders chat messages as its chat route does), unless the proxy
holds the model's tokenizer (the embedded engine's model folder, ``score_model`` for a remote vLLM)
and has checked that it counts as the engine does (:class:`PromptCounter`): then plain conversations
are counted here. A non-vLLM upstream cannot be asked: its requests keep the engine's numbers and
limit (usage scaled by the share of characters the client sent; README, "Threat model").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.proxy.errors import BadRequest, UpstreamUnavailable

logger = logging.getLogger(__name__)

ON_LOOP_CHARS = 1000  # shorter prompts are counted on the event loop (50 µs for a short question, 0.5 ms here)
PLAIN_ROLES = frozenset({"system", "user", "assistant"})
# Request fields that change how vLLM renders a conversation: such a request is counted by the engine.
RENDER_FIELDS = frozenset(
    {
        "tools",
        "reasoning_effort",
        "add_special_tokens",
        "chat_template",
        "chat_template_kwargs",
        "documents",
        "add_generation_prompt",
        "continue_final_message",
    }
)
BILLING_HEADER = "x-anthropic-billing-header"  # vLLM drops a system line starting with this (chat_utils)
# Conversations and prompts the local tokenizer must count as the engine does before it is trusted.
PROBES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("chat", {"messages": [{"role": "user", "content": "Hello there!"}]}),
    (
        "chat",
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Count: 1 2 3, then say café ✓"},
                {"role": "assistant", "content": "1 2 3. café ✓"},
                {"role": "user", "content": "  Again,\n\tplease.  "},
            ]
        },
    ),
    ("completion", {"prompt": "Once upon a time"}),
    ("completion", {"prompt": "Once upon a time", "add_special_tokens": False}),
)


def prompt_field(kind: str) -> str:
    return "messages" if kind == "chat" else "prompt"


def prompts(body: dict[str, Any]) -> list[str]:
    """A completion request's text prompts (token-id prompts are admin only and not counted)."""
    prompt = body.get("prompt")
    return [prompt] if isinstance(prompt, str) else [p for p in prompt or () if isinstance(p, str)]


def tokenize_payloads(kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """vLLM ``/tokenize`` requests that count ``body``'s prompts as its chat or completions route reads them."""
    model = body.get("model")
    if kind == "chat":
        payload: dict[str, Any] = {
            "model": model,
            "messages": body["messages"],
            "add_generation_prompt": True,
            "add_special_tokens": bool(body.get("add_special_tokens", False)),
        }
        if body.get("tools"):
            payload["tools"] = body["tools"]
        effort = body.get("reasoning_effort")
        if effort is not None:  # as vLLM's chat route passes it to the template
            payload["chat_template_kwargs"] = {"reasoning_effort": effort, "enable_thinking": effort != "none"}
        return [payload]
    special = bool(body.get("add_special_tokens", True))
    return [{"model": model, "prompt": p, "add_special_tokens": special} for p in prompts(body)]


class LocalTokenizer:
    """The model's tokenizer and chat template from its folder (transformers), counting the prompts of
    plain requests as vLLM renders them: chat turns of role system, user or assistant with string
    content and nothing else, no tools or template options; string completion prompts."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        self.template = AutoTokenizer.from_pretrained(folder)
        # A private copy: encoding never changes its settings, so threads can share it.
        self.encoder = Tokenizer.from_str(self.template.backend_tokenizer.to_str())
        self.encoder.no_truncation()
        self.encoder.no_padding()

    @staticmethod
    def plain(kind: str, body: dict[str, Any]) -> bool:
        if kind != "chat":
            return isinstance(body.get("prompt"), (str, list))
        if RENDER_FIELDS & body.keys():
            return False
        for m in body.get("messages") or ():
            if m.keys() - {"role", "content"} or m.get("role") not in PLAIN_ROLES:
                return False
            content = m.get("content")
            if not isinstance(content, str) or (m["role"] == "system" and content.startswith(BILLING_HEADER)):
                return False
        return True

    def count(self, kind: str, body: dict[str, Any]) -> list[int]:
        if kind == "chat":
            text = self.template.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
            return [len(self.encoder.encode(text, add_special_tokens=False).ids)]
        special = bool(body.get("add_special_tokens", True))
        return [len(self.encoder.encode(p, add_special_tokens=special).ids) for p in prompts(body)]

    def text(self, text: str) -> int:
        return len(self.encoder.encode(text, add_special_tokens=False).ids)


def size(kind: str, body: dict[str, Any]) -> int:
    if kind == "chat":
        return sum(len(m.get("content") or "") for m in body["messages"])
    return sum(len(p) for p in prompts(body))


class PromptCounter:
    """Counts prompts as a vLLM engine does: with ``tokenize`` (one ``/tokenize`` request -> its count),
    or with the tokenizer in ``folder`` for plain requests once it has counted :data:`PROBES` exactly as
    the engine does (a different template, tokenizer or engine option then leaves the engine counting)."""

    def __init__(self, tokenize: Callable[[dict[str, Any]], Awaitable[int]], folder: Path | None = None) -> None:
        self.tokenize = tokenize
        self.folder = folder
        self.local: LocalTokenizer | None = None
        self.verified: bool | None = None if folder else False  # None: not checked yet
        self._check: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Load the local tokenizer (off the event loop); without transformers, the engine counts."""
        if self.folder is None or self.local is not None:
            return
        try:
            self.local = await asyncio.to_thread(LocalTokenizer, self.folder)
        except Exception as exc:  # noqa: BLE001 - optional: the engine counts instead
            logger.info("prompt tokens are counted by the engine (no local tokenizer: %s)", type(exc).__name__)
            self.verified = False

    async def verify(self) -> None:
        """Compare the local counts of :data:`PROBES` with the engine's (once; again after a failed try)."""
        if self.verified is not None:
            return
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._verify())
        await asyncio.shield(self._check)

    async def _verify(self) -> None:
        await self.load()
        if self.local is None:
            return
        try:
            for kind, probe in PROBES:
                body = {"model": None, **probe}
                remote = [await self.tokenize(p) for p in tokenize_payloads(kind, body)]
                if self.local.count(kind, body) != remote:
                    logger.warning("the local tokenizer counts differently from the engine: the engine counts prompts")
                    self.verified = False
                    return
        except Exception as exc:  # noqa: BLE001 - the engine is not reachable yet: check again later
            logger.debug("prompt counter check postponed: %s", type(exc).__name__)
            return
        self.verified = True
        logger.info("prompt tokens are counted in the proxy with the model's tokenizer")

    async def count(self, kind: str, body: dict[str, Any]) -> list[int]:
        if self.verified is None:
            await self.verify()
        local = self.local if self.verified else None
        if local is not None and local.plain(kind, body):
            if size(kind, body) <= ON_LOOP_CHARS:
                return local.count(kind, body)
            return await asyncio.to_thread(local.count, kind, body)
        return list(await asyncio.gather(*(self.tokenize(p) for p in tokenize_payloads(kind, body))))

    def text_tokens(self, text: str) -> int | None:
        return self.local.text(text) if self.local is not None and self.verified else None


@dataclass(frozen=True)
class PromptBudget:
    """A client request's own numbers: ``counts`` (each prompt's tokens as sent), ``context`` (C, the
    context clients see; None when the engine's is unknown), ``fill`` (the max_tokens to send when the
    client set none) and ``sent`` (its prompt, ``messages`` or ``prompt``, as it sent it)."""

    counts: tuple[int, ...]
    context: int | None = None
    fill: int | None = None
    sent: Any = field(default=None, compare=False, repr=False)

    @property
    def tokens(self) -> int:
        return sum(self.counts)


def requested(kind: str, body: dict[str, Any]) -> tuple[int | None, str]:
    """The completion length the client asked for, and the field it used (vLLM reads
    ``max_completion_tokens`` first)."""
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        return body["max_completion_tokens"], "max_completion_tokens"
    return body.get("max_tokens"), "max_tokens"


async def client_budget(backend: Any, kind: str, body: dict[str, Any], reserve: int) -> PromptBudget | None:
    """Count the client's prompt and check it against the context clients see: a 400 naming only the
    client's numbers when it does not fit. None when ``backend`` cannot count (a non-vLLM upstream)."""
    counts = await backend.count_prompt(kind, body)
    if counts is None or not counts:
        return None
    what = prompt_field(kind)
    n_ctx = backend.context_length()
    if n_ctx is None:
        return PromptBudget(tuple(counts), sent=body.get(what))
    context = n_ctx - reserve
    if context < 1:
        logger.error("client_context_reserve_tokens (%d) leaves no context of %d tokens to clients", reserve, n_ctx)
        raise UpstreamUnavailable("the model server is misconfigured for clients", code="no_client_context")
    longest = max(counts)
    if longest >= context:
        raise BadRequest(
            f"this model's context is {context} tokens, and your {what} take {longest}: "
            f"reduce the length of the {what}",
            param=what,
            code="context_length_exceeded",
        )
    wanted, param = requested(kind, body)
    if wanted is not None and longest + wanted > context:
        raise BadRequest(
            f"this model's context is {context} tokens, but you asked for {longest + wanted} "
            f"({longest} in the {what}, {wanted} in the completion): reduce the length of the {what} or {param}",
            param=param,
            code="context_length_exceeded",
        )
    fill = None
    if wanted is None:
        default = backend.default_max_tokens(kind)
        fill = context - longest if default is None else min(default, context - longest)
    return PromptBudget(tuple(counts), context, fill, body.get(what))
