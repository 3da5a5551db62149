"""In-process transformers backend, for machines without vLLM.

A small decoding loop with a KV cache over ``AutoModelForCausalLM``: greedy or sampled
(temperature, top-p, seed), ``n`` choices, stop strings, ``max_tokens``, logprobs, streaming. The
guards' specs (suppression, contrastive fusion) and the client's own ``bad_words`` and ``logit_bias``
become logits transforms through ``obliviate.proxy.scoring.Interventions`` (the same chain
``/admin/score`` teacher-forces).
Requests run one at a time on a worker thread; a client that goes away stops its generation.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.guards.assistant import ContrastiveConfig, ContrastiveProcessor
from obliviate.guards.specs import Spec
from obliviate.proxy import protocol as wire
from obliviate.proxy.answers import content_text
from obliviate.proxy.backends.base import ALL_SPECS, Backend, Kind
from obliviate.proxy.errors import BadRequest, UpstreamUnavailable
from obliviate.proxy.scoring import AnswerScorer, Interventions

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256  # a request without max_tokens


@dataclass
class _Step:
    """One generated token of one choice."""

    index: int
    text: str  # new text released by this step (may be empty while held back)
    token_id: int
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)
    finish_reason: str | None = None


class TransformersBackend(Backend):
    name = "transformers"
    capabilities = ALL_SPECS

    def __init__(
        self,
        model_path: Path,
        model_id: str,
        *,
        max_model_len: int = 4096,
        threads: int | None = None,
        contrastive: ContrastiveConfig | None = None,
    ):
        self.model_path = Path(model_path)
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.threads = threads
        self.model: Any = None
        self.tokenizer: Any = None
        self.contrastive = contrastive
        self.decoder: Any = None  # obliviate.guards.assistant.ContrastiveDecoder when an assistant is configured
        self._lock = threading.Lock()
        self._scorer: AnswerScorer | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        self.model.eval()
        if self.contrastive is not None:
            from obliviate.guards.assistant import ContrastiveDecoder, check_compatible

            check_compatible(self.model_path, self.contrastive.paths)
            self.decoder = ContrastiveDecoder(self.contrastive)
        logger.info("transformers backend loaded %s", self.model_path)

    async def stop(self) -> None:
        self.model = None

    def is_ready(self) -> bool:
        return self.model is not None

    def model_ids(self) -> list[str]:
        return [self.model_id]

    # prompt tokens (obliviate.proxy.prompt_tokens): counted by the code that builds the prompt -------
    def context_length(self) -> int | None:
        return self.max_model_len

    def default_max_tokens(self, kind: Kind) -> int | None:
        return DEFAULT_MAX_TOKENS

    async def count_prompt(self, kind: Kind, body: dict[str, Any]) -> list[int] | None:
        if self.tokenizer is None:
            raise UpstreamUnavailable("transformers backend is not loaded", code="backend_unavailable")
        return [len(await asyncio.to_thread(self._prompt_ids, kind, body))]

    def text_tokens(self, text: str) -> int | None:
        return None if self.tokenizer is None else len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def scorer(self) -> AnswerScorer:
        """Teacher-forced scoring with this backend's own model and assistants (sharing its lock)."""
        if self.model is None:
            raise UpstreamUnavailable("transformers backend is not loaded", code="backend_unavailable")
        if self._scorer is None or self._scorer.model is not self.model:
            self._scorer = AnswerScorer(self.model, self.tokenizer, self.decoder, lock=self._lock)
        return self._scorer

    # prompt handling -------------------------------------------------------------------------
    def _prompt_ids(self, kind: Kind, body: dict[str, Any]) -> list[int]:
        if kind == "chat":
            messages = [{"role": m["role"], "content": content_text(m.get("content"))} for m in body["messages"]]
            enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
            return list(ids)
        prompt = body["prompt"]
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            return list(prompt)
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise BadRequest("prompt: the transformers backend takes one prompt per request", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, list):
            return list(prompt)
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    # decoding --------------------------------------------------------------------------------
    def _generate(
        self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec], cancel: threading.Event
    ) -> Iterator[_Step]:
        import torch

        prompt_ids = self._prompt_ids(kind, body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        if len(prompt_ids) >= self.max_model_len:
            raise BadRequest(
                f"prompt has {len(prompt_ids)} tokens; the model's context is {self.max_model_len}",
                param="messages" if kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        limit = min(limit, self.max_model_len - len(prompt_ids))
        temperature = body.get("temperature")
        temperature = 1.0 if temperature is None else float(temperature)
        top_p = body.get("top_p")
        top_p = 1.0 if top_p is None else float(top_p)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
        hold = max((len(s) for s in stops), default=1) - 1
        want_top = _top_logprobs(kind, body)
        generator = torch.Generator().manual_seed(int(body["seed"])) if body.get("seed") is not None else None
        iv = Interventions.for_request(body, specs, self.tokenizer, int(self.model.config.vocab_size))
        if iv.contrastive and self.decoder is None:
            raise BadRequest("contrastive decoding is not configured on this backend", code="contrastive_unavailable")
        eos = {self.tokenizer.eos_token_id, *(_list(self.model.generation_config.eos_token_id))} - {None}

        for index in range(int(body.get("n", 1))):
            ids = torch.tensor([prompt_ids])
            past = None
            out_ids: list[int] = []
            contrast = ContrastiveProcessor(self.decoder, prompt_ids, iv.alpha) if iv.contrastive else None
            released = 0
            finish: str | None = None
            with torch.inference_mode():
                while finish is None:
                    if cancel.is_set():
                        return
                    out = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    # logprobs after the interventions (bans, bias, contrastive fusion), as vLLM's
                    # processed_logprobs: a banned token never shows among the alternatives
                    logits = iv.step(out_ids, out.logits[0, -1].float(), contrast)
                    logprobs = torch.log_softmax(logits, dim=-1)
                    token = _pick(logits, temperature, top_p, generator)
                    top = []
                    if want_top:
                        vals, idx = torch.topk(logprobs, want_top)
                        top = [
                            (self.tokenizer.decode([int(i)]), float(v))
                            for v, i in zip(vals, idx, strict=True)
                            if v > float("-inf")
                        ]
                    if token in eos:
                        finish = "stop"
                        text_all = self.tokenizer.decode(out_ids, skip_special_tokens=True)
                        yield _Step(index, text_all[released:], token, float(logprobs[token]), top, finish)
                        break
                    out_ids.append(token)
                    text_all = self.tokenizer.decode(out_ids, skip_special_tokens=True)
                    cut = _first_stop(text_all, stops)
                    if cut is not None:
                        text_all, finish = text_all[:cut], "stop"
                    elif len(out_ids) >= limit:
                        finish = "length"
                    if finish is None:
                        safe = len(text_all) - hold
                        if text_all.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more
                            safe = min(safe, len(text_all) - 1)
                        new = text_all[released : max(released, safe)]
                    else:
                        new = text_all[released:]
                    released += len(new)
                    yield _Step(index, new, token, float(logprobs[token]), top, finish)
                    ids = torch.tensor([[token]])

    def _run(
        self, kind: Kind, body: dict[str, Any], cancel: threading.Event, specs: Sequence[Spec] = ()
    ) -> Iterator[_Step]:
        if self.model is None:
            raise UpstreamUnavailable("transformers backend is not loaded", code="backend_unavailable")
        with self._lock:
            yield from self._generate(kind, body, specs, cancel)

    async def complete(self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()) -> dict[str, Any]:
        def work() -> tuple[list[list[_Step]], int]:
            steps: list[list[_Step]] = [[] for _ in range(int(body.get("n", 1)))]
            for step in self._run(kind, body, threading.Event(), specs):
                steps[step.index].append(step)
            return steps, len(self._prompt_ids(kind, body))

        per_choice, prompt_tokens = await asyncio.to_thread(work)
        choices = []
        for i, steps in enumerate(per_choice):
            text = "".join(s.text for s in steps)
            finish = steps[-1].finish_reason if steps else "length"
            if kind == "chat":
                logprobs = _chat_logprobs(self.tokenizer, steps) if body.get("logprobs") else None
            else:
                logprobs = _completion_logprobs(self.tokenizer, steps) if body.get("logprobs") is not None else None
            choices.append(wire.response_choice(kind, i, text, finish, logprobs=logprobs))
        completion_tokens = sum(len(s) for s in per_choice)
        return wire.response(kind, body["model"], choices, wire.usage(prompt_tokens, completion_tokens))

    async def stream(
        self, kind: Kind, body: dict[str, Any], specs: Sequence[Spec] = ()
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def work() -> None:
            try:
                for step in self._run(kind, body, cancel, specs):
                    loop.call_soon_threadsafe(queue.put_nowait, step)
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        cid = wire.new_id(kind)
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
            return wire.chunk(kind, cid, created, body["model"], choices, usage)

        loop.run_in_executor(None, work)
        completion_tokens = 0
        started: set[int] = set()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                step: _Step = item
                completion_tokens += 1
                choice = wire.delta_choice(kind, step.index, step.text, step.finish_reason)
                if kind == "chat":
                    if step.index not in started:
                        started.add(step.index)
                        yield chunk([wire.role_choice(step.index)])
                    if body.get("logprobs"):
                        choice["logprobs"] = _chat_logprobs(self.tokenizer, [step])
                elif body.get("logprobs") is not None:
                    choice["logprobs"] = _completion_logprobs(self.tokenizer, [step])
                if step.text or step.finish_reason or "logprobs" in choice:
                    yield chunk([choice])
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt_tokens = len(self._prompt_ids(kind, body))
                yield chunk([], wire.usage(prompt_tokens, completion_tokens))
        finally:
            cancel.set()  # the worker stops at its next token; it reports nothing more


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _top_logprobs(kind: Kind, body: dict[str, Any]) -> int:
    if kind == "chat":
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    return int(body.get("logprobs") or 0)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _pick(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    if temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


def _chat_logprobs(tokenizer: Any, steps: list[_Step]) -> dict[str, Any]:
    content = []
    for s in steps:
        tok = tokenizer.decode([s.token_id])
        content.append(
            {
                "token": tok,
                "logprob": s.logprob,
                "bytes": list(tok.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in s.top],
            }
        )
    return {"content": content}


def _completion_logprobs(tokenizer: Any, steps: list[_Step]) -> dict[str, Any]:
    tokens = [tokenizer.decode([s.token_id]) for s in steps]
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in steps],
        "top_logprobs": [dict(s.top) for s in steps],
        "text_offset": [],
    }
