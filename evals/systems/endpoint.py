"""An OpenAI-compatible endpoint as a system under evaluation (the proxy in any mode, or vLLM).

Generation goes through the official ``openai`` SDK (chat completions; plain-text items through
completions), greedy, requests sent concurrently from a thread pool; the proxy's
``x-obliviate-action`` response header becomes :attr:`Generation.action` (``"unknown"`` when the
response has none: the proxy sends it to the admin key only, unless ``client_decision_headers`` is
on, so that a client cannot test names against the forget set). With ``policy`` every
request carries ``{"obliviate": {"policy": policy}}`` (the proxy's admin-only per-request policy,
so the admin key authenticates these requests).

Scoring is the proxy's ``POST /admin/score`` (admin key): the answer's log-probabilities under the
same interventions generation would get; a refused item comes back unscored. Without an admin key
the system only generates (``can_score`` is False).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem

ACTION_HEADER = "x-obliviate-action"
SCORE_BATCH = 16  # items per /admin/score request
DEFAULT_TIMEOUT = 600.0


class ScoringError(RuntimeError):
    """``/admin/score`` answered with an error."""


def api_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000`` (where ``/admin`` lives)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def scored_answer(entry: dict[str, Any]) -> ScoredAnswer:
    """One ``/admin/score`` result -> :class:`ScoredAnswer` (a null log-probability is -inf)."""
    if not entry.get("scored"):
        return ScoredAnswer(scored=False, action=entry.get("action") or "pass", reason=entry.get("reason"))
    return ScoredAnswer(
        scored=True,
        tokens=list(entry.get("tokens") or []),
        logprobs=[-math.inf if v is None else float(v) for v in entry.get("logprobs") or []],
        argmax=list(entry.get("argmax") or []),
        mu=[float(v) for v in entry.get("mu") or []],
        var=[float(v) for v in entry.get("var") or []],
        action=entry.get("action") or "pass",
        reason=entry.get("reason"),
    )


class EndpointSystem:
    """``EndpointSystem(base_url, model, api_key=None, admin_key=None, policy=None, concurrency=8)``.

    ``base_url`` ends in ``/v1``. ``api_key`` authenticates generation (the admin key when a policy
    is set or when no client key is given); ``admin_key`` enables scoring. ``http_client`` (tests)
    replaces the HTTP client of both paths.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        admin_key: str | None = None,
        policy: str | None = None,
        concurrency: int = 8,
        name: str | None = None,
        *,
        output_guard: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
    ) -> None:
        if policy is not None and not admin_key:
            raise ValueError("a per-request policy (obliviate.policy) needs the admin key")
        if output_guard is not None and not admin_key:
            raise ValueError("a per-request output guard mode (obliviate.output_guard) needs the admin key")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.policy = policy
        self.output_guard = output_guard
        self.concurrency = concurrency
        self.name = name or (f"{model}[{policy}]" if policy else model)
        self._admin_key = admin_key
        gen_key = admin_key if (policy, output_guard) != (None, None) else (api_key or admin_key)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._client = OpenAI(
            base_url=self.base_url, api_key=gen_key or "none", http_client=self._http, timeout=timeout, max_retries=2
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="endpoint")

    @property
    def can_score(self) -> bool:
        return bool(self._admin_key)

    def describe(self) -> dict[str, str]:
        extra = self._extra_body()
        options = f", extra_body {json.dumps(extra)} (admin key)" if extra else ""
        scoring = (
            f"POST {api_root(self.base_url)}/admin/score with the admin key: teacher-forced log-probabilities "
            "of the answer tokens (then end of sequence) under the same interventions the proxy applies to the "
            f"request{' with this policy' if self.policy else ''}; refused items are not scored"
            if self.can_score
            else "none (no admin key): probability-based metrics are not applicable"
        )
        return {
            "system": f"OpenAI-compatible endpoint {self.base_url}, model {self.model!r}",
            "generation": f"openai SDK chat.completions (plain-text items: completions), temperature 0, max_tokens "
            f"per benchmark{options}; {self.concurrency} concurrent requests; action from the {ACTION_HEADER} header",
            "scoring": scoring
            + (
                f"; the output guard (obliviate.output_guard={self.output_guard!r}) acts on generated text only"
                if self.output_guard is not None
                else ""
            ),
        }

    # generation -----------------------------------------------------------------------------------
    def _extra_body(self) -> dict[str, Any] | None:
        options = {k: v for k, v in (("policy", self.policy), ("output_guard", self.output_guard)) if v is not None}
        return {"obliviate": options} if options else None

    def _generate_one(self, item: ChatItem, max_tokens: int) -> Generation:
        common = {"model": self.model, "max_tokens": max_tokens, "temperature": 0, "extra_body": self._extra_body()}
        if item.prompt is not None:
            raw = self._client.completions.with_raw_response.create(prompt=item.prompt, **common)
            completion = raw.parse()
            text = completion.choices[0].text or ""
        else:
            raw = self._client.chat.completions.with_raw_response.create(messages=list(item.messages), **common)
            completion = raw.parse()
            text = completion.choices[0].message.content or ""
        usage = getattr(completion, "usage", None)
        return Generation(
            text=text,
            action=raw.headers.get(ACTION_HEADER, "unknown"),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        return list(self._pool.map(lambda item: self._generate_one(item, max_tokens), items))

    # scoring --------------------------------------------------------------------------------------
    def _score_batch(self, items: Sequence[ScoreItem], vocab_stats: bool) -> list[ScoredAnswer]:
        body: dict[str, Any] = {
            "model": self.model,
            "items": [
                {"prompt": it.prompt, "answer": it.answer}
                if it.prompt is not None
                else {"messages": list(it.messages), "answer": it.answer}
                for it in items
            ],
            "vocab_stats": vocab_stats,
        }
        if self.policy is not None:
            body["obliviate"] = {"policy": self.policy}
        r = self._http.post(
            f"{api_root(self.base_url)}/admin/score", json=body, headers={"Authorization": f"Bearer {self._admin_key}"}
        )
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except Exception:  # not an OpenAI-shaped error
                message = r.text[:200]
            raise ScoringError(f"/admin/score answered {r.status_code}: {message}")
        data = sorted(r.json()["data"], key=lambda entry: entry["index"])
        if len(data) != len(items):
            raise ScoringError(f"/admin/score returned {len(data)} results for {len(items)} items")
        return [scored_answer(entry) for entry in data]

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        if not self.can_score:
            raise NotImplementedError(f"{self.name}: scoring needs the proxy's admin key (POST /admin/score)")
        batches = [items[i : i + SCORE_BATCH] for i in range(0, len(items), SCORE_BATCH)]
        out: list[ScoredAnswer] = []
        for scored in self._pool.map(lambda batch: self._score_batch(batch, vocab_stats), batches):
            out += scored
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._own_http:
            self._http.close()
