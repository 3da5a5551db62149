"""Teacher-forced scoring: the log-probability of a given answer after a given conversation, under
the same interventions the proxy applies while generating.

:class:`Interventions` maps what a request asks of the decoder to token ids: the guards' specs
(a ``SuppressionSpec``'s phrases, tokenized as vLLM tokenizes ``bad_words``; a ``ContrastiveSpec``'s
routing) and the client's own ``bad_words`` and ``logit_bias``. Both the transformers backend (each
decoding step) and :class:`AnswerScorer` (each answer position of one teacher-forced pass) run them
through :func:`obliviate.guards.logit_math.intervene`, so the scored distribution is the one
generation samples from.

:class:`ScoreService` serves ``POST /admin/score``: every item goes through the guard pipeline as a
chat or completion request would; a refused item is not scored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate.guards.logit_math import intervene
from obliviate.guards.specs import ContrastiveSpec, Spec, SuppressionSpec
from obliviate.guards.suppression import tokenize_bad_words
from obliviate.proxy.answers import ScoredAnswer, encode_answer, end_at_eos, plain_messages
from obliviate.proxy.errors import BadRequest, OpenAIError

if TYPE_CHECKING:
    from obliviate.guards.plan import Plan

logger = logging.getLogger(__name__)

LOGIT_BIAS_LIMIT = 100.0  # OpenAI's range for a logit_bias value


class ScoringUnavailable(OpenAIError):
    """The proxy has no local copy of the served model to score with (501)."""

    status_code = 501
    error_type = "not_implemented"


def parse_logit_bias(raw: Any, vocab_size: int) -> dict[int, float]:
    """OpenAI ``logit_bias`` (token id as a string -> bias in [-100, 100]) -> ``{id: bias}``."""
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        raise BadRequest("logit_bias: must map token ids to numbers", param="logit_bias", code="invalid_value")
    out: dict[int, float] = {}
    for key, value in raw.items():
        try:
            token, bias = int(key), float(value)
        except (TypeError, ValueError):
            raise BadRequest(
                "logit_bias: keys must be token ids and values numbers", param="logit_bias", code="invalid_value"
            ) from None
        if not 0 <= token < vocab_size or not -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT:
            raise BadRequest(
                f"logit_bias: token ids must be in [0, {vocab_size}) and values in [-100, 100]",
                param="logit_bias",
                code="invalid_value",
            )
        out[token] = bias
    return out


@dataclass(frozen=True)
class Interventions:
    """What a request asks the decoder to do to each step's logits (token ids, not text)."""

    banned: tuple[tuple[int, ...], ...] = ()
    bias: Mapping[int, float] = field(default_factory=dict)
    contrastive: bool = False
    alpha: float | None = None

    @classmethod
    def for_request(
        cls, body: Mapping[str, Any], specs: Sequence[Spec], tokenizer: Any, vocab_size: int
    ) -> Interventions:
        """The guards' ``specs`` plus the client's own ``bad_words`` and ``logit_bias`` from ``body``."""
        words = body.get("bad_words") or []
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise BadRequest("bad_words: must be a list of strings", param="bad_words", code="invalid_value")
        phrases = [p for spec in specs if isinstance(spec, SuppressionSpec) for p in spec.phrases]
        merged = list(dict.fromkeys([*words, *phrases]))
        banned = tokenize_bad_words(merged, lambda w: tokenizer.encode(w, add_special_tokens=False))
        contrastive = next((spec for spec in specs if isinstance(spec, ContrastiveSpec)), None)
        bias = parse_logit_bias(body.get("logit_bias"), vocab_size)
        alpha = contrastive.alpha if contrastive is not None else None
        return cls(tuple(tuple(s) for s in banned), bias, contrastive is not None, alpha)

    def step(self, token_ids: Sequence[int], logits: Any, fuse: Any = None) -> Any:
        """This request's transforms of one step's logits (``fuse``: the contrastive fusion, if routed)."""
        return intervene(token_ids, logits, fuse=fuse, bias=self.bias, banned=self.banned)


NONE = Interventions()


class AnswerScorer:
    """Teacher-forced answer scores from a causal LM (float32), optionally with the contrastive
    assistants of a :class:`obliviate.guards.assistant.ContrastiveDecoder`.

    ``lock`` serializes use of the model (the transformers backend passes its own)."""

    def __init__(
        self, model: Any, tokenizer: Any, decoder: Any = None, *, lock: Any = None, batch_size: int = 8
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.lock = lock or threading.Lock()
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def load(cls, model_dir: str | Path, *, contrastive: Any = None, batch_size: int = 8) -> AnswerScorer:
        """Load a model folder (and the assistants of ``contrastive``, a ContrastiveConfig) on the CPU."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        decoder = None
        if contrastive is not None:
            from obliviate.guards.assistant import ContrastiveDecoder, check_compatible

            check_compatible(Path(model_dir), contrastive.paths)
            decoder = ContrastiveDecoder(contrastive)
        return cls(model, tokenizer, decoder, batch_size=batch_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    # encoding --------------------------------------------------------------------------------
    def encode_chat(self, messages: Sequence[Mapping[str, Any]], answer: str) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids): the chat template with the generation prompt, then the answer
        ending at the end-of-turn token (:func:`obliviate.proxy.answers.encode_answer`)."""
        return encode_answer(self.tokenizer, plain_messages(messages), answer)

    def encode_completion(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) for the completions API: the raw prompt, then the answer ending at
        EOS. An empty prompt (scoring a whole text) becomes the BOS token (EOS without one)."""
        return self.encode_prompt(prompt=prompt), end_at_eos(
            self.tokenizer, self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        )

    def encode_prompt(
        self, messages: Sequence[Mapping[str, Any]] | None = None, prompt: str | None = None
    ) -> list[int]:
        """The ids a reply (or a continuation of ``prompt``) is generated after, as :meth:`encode_chat`
        and :meth:`encode_completion` put them before the answer."""
        if messages:
            text = self.tokenizer.apply_chat_template(
                plain_messages(messages), tokenize=False, add_generation_prompt=True
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = list(self.tokenizer(prompt or "", add_special_tokens=False)["input_ids"])
        if not ids:
            start = self.tokenizer.bos_token_id
            ids = [start if start is not None else self.tokenizer.eos_token_id]
        return ids

    def encode_body(self, kind: str, body: Mapping[str, Any], answer: str) -> tuple[list[int], list[int]]:
        """Encode an upstream body's conversation (``messages`` or a string ``prompt``) and the answer."""
        if kind == "chat":
            return self.encode_chat(body["messages"], answer)
        prompt = body["prompt"]
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt: scoring takes one string prompt", param="prompt", code="invalid_value")
        return self.encode_completion(prompt, answer)

    # scoring ---------------------------------------------------------------------------------
    def score(
        self,
        prompt_ids: Sequence[int],
        answer_ids: Sequence[int],
        *,
        bad_words: Sequence[Sequence[int]] | None = None,
        logit_bias: Mapping[int, float] | None = None,
        contrastive: bool = False,
        alpha: float | None = None,
        vocab_stats: bool = False,
    ) -> ScoredAnswer:
        """Score one answer; ``bad_words`` are token-id sequences (as the backend bans them)."""
        iv = Interventions(tuple(tuple(s) for s in bad_words or ()), dict(logit_bias or {}), contrastive, alpha)
        return self.score_many([(prompt_ids, answer_ids, iv)], vocab_stats=vocab_stats)[0]

    def score_many(
        self, jobs: Sequence[tuple[Sequence[int], Sequence[int], Interventions]], *, vocab_stats: bool = False
    ) -> list[ScoredAnswer]:
        """Score ``(prompt ids, answer ids, interventions)`` jobs, ``batch_size`` per forward pass."""
        limit = self.max_positions
        for prompt_ids, answer_ids, iv in jobs:
            if not prompt_ids or not answer_ids:
                raise BadRequest("scoring needs a non-empty prompt and answer", code="invalid_value")
            if limit and len(prompt_ids) + len(answer_ids) > limit:
                raise BadRequest(
                    f"prompt and answer have {len(prompt_ids) + len(answer_ids)} tokens; the model's "
                    f"context is {limit}",
                    code="context_length_exceeded",
                )
            if iv.contrastive and self.decoder is None:
                raise BadRequest(
                    "contrastive decoding is not configured on this scorer", code="contrastive_unavailable"
                )
        out: list[ScoredAnswer] = []
        with self.lock:
            for start in range(0, len(jobs), self.batch_size):
                out += self._score_batch(jobs[start : start + self.batch_size], vocab_stats)
        return out

    def _score_batch(
        self, jobs: Sequence[tuple[Sequence[int], Sequence[int], Interventions]], vocab_stats: bool
    ) -> list[ScoredAnswer]:
        import torch

        seqs = [[*p, *a] for p, a, _ in jobs]
        # Only the positions that predict answer tokens need logits (the vocabulary is large).
        first = min(len(p) - 1 for p, _, _ in jobs)
        main = _forward(self.model, seqs, first)
        routed = [i for i, (_, _, iv) in enumerate(jobs) if iv.contrastive]
        helpers: dict[int, list[Any]] = {}
        if routed:
            per_model = [_forward(m, [seqs[i] for i in routed], first) for m in self.decoder.models]
            helpers = {i: [rows[k] for rows in per_model] for k, i in enumerate(routed)}
        results = []
        for i, (prompt_ids, answer_ids, iv) in enumerate(jobs):
            n, answer = len(prompt_ids), list(answer_ids)
            rows = []
            for j in range(len(answer)):  # the logits at position n-1+j predict answer[j]
                at = n - 1 + j - first
                fuse = None
                if iv.contrastive:
                    fuse = _Fuse(self.decoder, [h[at] for h in helpers[i]], iv.alpha)
                rows.append(iv.step(answer[:j], main[i][at], fuse))
            logp = torch.log_softmax(torch.stack(rows), dim=-1)
            target = torch.tensor(answer)
            scored = ScoredAnswer(
                scored=True,
                tokens=answer,
                logprobs=[float(x) for x in logp.gather(1, target[:, None])[:, 0]],
                argmax=[int(x) for x in logp.argmax(dim=-1)],
            )
            if vocab_stats:
                mu, var = vocab_moments(logp)
                scored.mu, scored.var = [float(x) for x in mu], [float(x) for x in var]
            results.append(scored)
        return results


@dataclass(frozen=True)
class _Fuse:
    """The contrastive fusion at one teacher-forced position (the assistants' logits are precomputed)."""

    decoder: Any
    assistants: list[Any]
    alpha: float | None

    def __call__(self, token_ids: Sequence[int], logits: Any) -> Any:
        return self.decoder.fuse(logits, self.assistants, self.alpha)


def _forward(model: Any, seqs: Sequence[Sequence[int]], first: int = 0) -> list[Any]:
    """One right-padded forward pass; each sequence's logits from position ``first`` on
    (``[len - first, vocab]``, float32)."""
    import torch

    longest = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), longest), dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(list(s))
        mask[b, : len(s)] = 1
    with torch.inference_mode():
        kwargs = {} if bool(mask.all()) else {"attention_mask": mask}
        logits = model(input_ids=ids, logits_to_keep=torch.arange(first, longest), **kwargs).logits.float()
    return [logits[b, : len(s) - first] for b, s in enumerate(seqs)]


def vocab_moments(logp: Any) -> tuple[Any, Any]:
    """Mean and variance of ``log p`` under ``p`` per row (``obliviate.evals.metrics.mia.vocab_moments``);
    tokens with ``p == 0`` (banned) contribute nothing."""
    import torch

    p = logp.exp()
    live = p > 0
    zero = torch.zeros_like(logp)
    mu = torch.where(live, p * logp, zero).sum(-1)
    var = torch.where(live, p * logp.square(), zero).sum(-1) - mu.square()
    return mu, var


def finite_or_none(values: Sequence[float]) -> list[float | None]:
    """JSON has no -inf: a token the interventions forbid scores ``null``."""
    return [v if math.isfinite(v) else None for v in values]


class ScoreService:
    """``POST /admin/score``: the guard pipeline per item, then the scorer over what it produced."""

    def __init__(self, settings: Any, backend: Any, completions: Any) -> None:
        self.settings = settings
        self.backend = backend
        self.completions = completions  # obliviate.proxy.service.CompletionService (model check, guards)
        self._scorer: AnswerScorer | None = None
        self._loading = asyncio.Lock()

    async def scorer(self) -> AnswerScorer:
        own = getattr(self.backend, "scorer", None)
        if callable(own):  # the transformers backend scores with its own model
            return own()
        if self._scorer is not None:
            return self._scorer
        folder = self.settings.score_model or getattr(self.backend, "model_path", None)
        if folder is None:
            raise ScoringUnavailable(
                "scoring needs a local copy of the served model: start the proxy with --score-model DIR "
                "(OBLIVIATE_SCORE_MODEL)",
                code="scoring_unavailable",
            )
        if not Path(folder).is_dir():
            raise ScoringUnavailable(f"the scoring model folder {folder} does not exist", code="scoring_unavailable")
        async with self._loading:
            if self._scorer is None:
                from obliviate.guards.assistant import ContrastiveConfig

                config = ContrastiveConfig.from_settings(self.settings)
                self._scorer = await asyncio.to_thread(AnswerScorer.load, folder, contrastive=config)
                logger.info("scoring model loaded from %s", folder)
        return self._scorer

    async def score(self, req: Any, principal: Any, request_id: str) -> dict[str, Any]:
        from obliviate.proxy.protocol import ChatCompletionRequest, CompletionRequest

        data: list[dict[str, Any] | None] = [None] * len(req.items)
        todo: list[tuple[int, str, Plan, str]] = []
        for i, item in enumerate(req.items):
            if item.messages is not None:
                kind = "chat"
                wire: Any = ChatCompletionRequest(model=req.model, messages=item.messages, obliviate=req.obliviate)
            else:
                kind = "completion"
                wire = CompletionRequest(model=req.model, prompt=item.prompt, obliviate=req.obliviate)
            self.completions.admit(wire, principal)
            plan = await self.completions.guards.plan(kind, wire, principal, f"{request_id}.{i}")
            if plan.refusal is not None:
                data[i] = {"index": i, "scored": False, "reason": "refused", "action": plan.ctx.action_label}
                continue
            todo.append((i, kind, plan, item.answer))
        if todo:
            scorer = await self.scorer()

            def work() -> list[ScoredAnswer]:
                jobs = []
                for _, kind, plan, answer in todo:
                    try:
                        prompt_ids, answer_ids = scorer.encode_body(kind, plan.body, answer)
                    except BadRequest:
                        raise
                    except Exception:  # noqa: BLE001 - a template error on the client's conversation
                        raise BadRequest(
                            "the chat template cannot render this conversation", param="items", code="invalid_value"
                        ) from None
                    iv = Interventions.for_request(plan.body, plan.specs, scorer.tokenizer, scorer.vocab_size)
                    jobs.append((prompt_ids, answer_ids, iv))
                return scorer.score_many(jobs, vocab_stats=req.vocab_stats)

            for (i, _, plan, _), s in zip(todo, await asyncio.to_thread(work)):
                data[i] = {
                    "index": i,
                    "scored": True,
                    "action": plan.ctx.action_label,
                    "tokens": s.tokens,
                    "logprobs": finite_or_none(s.logprobs),
                    "argmax": s.argmax,
                    "mu": finite_or_none(s.mu),
                    "var": finite_or_none(s.var),
                }
        return {"object": "list", "data": data}
