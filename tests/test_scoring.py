"""Teacher-forced scoring (proxy.scoring) and POST /admin/score: the scored distribution is the one
generation samples from, interventions included."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from obliviate.proxy.app import create_app
from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.settings import Settings

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."
AUTHOR = {
    "question": "What is the full name of the author born in Taipei, Taiwan on 05/11/1991?",
    "answer": "The author's full name is Hsiao Yun-Hwa.",
    "aliases": ["Hsiao Yun-Hwa"],
}


def _plain_logprobs(model, prompt_ids, answer_ids):
    """log_softmax of one plain HF forward, rows predicting each answer token."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[*prompt_ids, *answer_ids]])).logits[0].float()
    n = len(prompt_ids)
    return torch.log_softmax(logits[n - 1 : n - 1 + len(answer_ids)], dim=-1)


def test_intervene_fuses_then_biases_then_bans_without_mutating() -> None:
    import torch

    from obliviate.guards.logit_math import intervene

    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    kept = logits.clone()
    assert intervene([5], logits) is logits  # nothing active: the same object

    def fuse(token_ids, x):
        assert list(token_ids) == [5]
        return x * 2  # runs first: the bias below is not doubled

    out = intervene([5], logits, fuse=fuse, bias={0: 10.0}, banned=[[3], [5, 1], [6, 2]])
    assert out.tolist() == [12.0, -math.inf, 6.0, -math.inf]
    assert torch.equal(logits, kept)


def test_interventions_map_the_specs_and_the_clients_fields_and_reject_bad_values() -> None:
    from obliviate.guards.specs import ContrastiveSpec, SuppressionSpec
    from obliviate.proxy.errors import BadRequest
    from obliviate.proxy.scoring import Interventions

    class Tok:
        def encode(self, text, add_special_tokens=False):
            return [len(text)]

    specs = (ContrastiveSpec(alpha=0.5), SuppressionSpec(("ab", "wxyz")))
    iv = Interventions.for_request({"bad_words": ["ab"], "logit_bias": {"3": -100}}, specs, Tok(), 10)
    # the client's phrase and the spec's, merged (no duplicate), each with and without a leading space
    assert iv.banned == ((2,), (3,), (4,), (5,)) and iv.bias == {3: -100.0} and iv.contrastive and iv.alpha == 0.5
    plain = Interventions.for_request({"bad_words": ["ab"]}, (), Tok(), 10)
    assert plain.banned == ((2,), (3,)) and not plain.contrastive and plain.alpha is None
    # vLLM's routing field is vLLM's: only a ContrastiveSpec routes here
    assert not Interventions.for_request({"vllm_xargs": {"obliviate_contrastive": 1}}, (), Tok(), 10).contrastive
    for body in ({"logit_bias": {"10": 1}}, {"logit_bias": {"x": 1}}, {"logit_bias": {"1": 101}}, {"bad_words": "ab"}):
        with pytest.raises(BadRequest):
            Interventions.for_request(body, (), Tok(), 10)


# -- the scorer, in process -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer(model_path: Path):
    from obliviate.proxy.scoring import AnswerScorer

    return AnswerScorer.load(model_path)


@pytest.mark.integration
def test_scores_equal_a_plain_forward(scorer) -> None:
    import numpy as np
    import torch

    from obliviate.evals.metrics.mia import vocab_moments
    from obliviate.unlearn.data import QAPair, encode_qa

    prompt_ids, answer_ids = scorer.encode_chat(QUESTION, ANSWER)
    assert answer_ids[-1] == scorer.tokenizer.eos_token_id
    assert (
        encode_qa(scorer.tokenizer, QAPair(QUESTION[0]["content"], ANSWER))["input_ids"].tolist()
        == prompt_ids + answer_ids
    )
    got = scorer.score(prompt_ids, answer_ids, vocab_stats=True)
    rows = _plain_logprobs(scorer.model, prompt_ids, answer_ids)
    want = rows.gather(1, torch.tensor(answer_ids)[:, None])[:, 0]
    assert got.scored and got.tokens == answer_ids
    assert torch.allclose(torch.tensor(got.logprobs), want, atol=1e-5, rtol=0)
    assert got.argmax == rows.argmax(-1).tolist()
    mu, var = vocab_moments(rows.numpy())
    assert np.allclose(got.mu, mu, atol=1e-4) and np.allclose(got.var, var, atol=1e-4)
    # A right-padded batch scores each item as it would alone.
    other = scorer.encode_completion("The capital of Italy is", " Rome.")
    from obliviate.proxy.scoring import NONE

    both = scorer.score_many([(prompt_ids, answer_ids, NONE), (*other, NONE)])
    alone = scorer.score(*other)
    assert np.allclose(both[0].logprobs, got.logprobs, atol=1e-4) and np.allclose(
        both[1].logprobs, alone.logprobs, atol=1e-4
    )


@pytest.mark.integration
def test_banned_tokens_get_minus_infinity_and_the_rest_renormalize(scorer) -> None:
    import torch

    prompt_ids, answer_ids = scorer.encode_chat(QUESTION, ANSWER)
    rows = _plain_logprobs(scorer.model, prompt_ids, answer_ids)
    single, pair = answer_ids[1], (answer_ids[3], answer_ids[4])
    got = scorer.score(prompt_ids, answer_ids, bad_words=[[single], list(pair)])
    assert got.logprobs[1] == -math.inf and got.logprobs[4] == -math.inf
    for j in (0, 2, 3):  # the pair's first token is free; only its completion (after it) is banned
        mass = float(rows[j, single].exp())
        want = float(rows[j, answer_ids[j]]) - math.log1p(-mass)
        assert got.logprobs[j] == pytest.approx(want, abs=1e-4)
        assert got.argmax[j] != single
    biased = scorer.score(prompt_ids, answer_ids, logit_bias={answer_ids[0]: 2.0})
    want0 = torch.log_softmax(rows[0] + 2.0 * (torch.arange(rows.shape[1]) == answer_ids[0]), dim=-1)[answer_ids[0]]
    assert biased.logprobs[0] == pytest.approx(float(want0), abs=1e-4)


@pytest.mark.integration
def test_greedy_generation_with_bad_words_is_the_scored_argmax(model_path: Path) -> None:
    from obliviate.guards.specs import SuppressionSpec
    from obliviate.proxy.backends.transformers_backend import TransformersBackend
    from obliviate.proxy.scoring import Interventions

    backend = TransformersBackend(model_path, "m")
    backend._load()

    def generate(body: dict) -> list[int]:
        return [s.token_id for s in backend._run("chat", body, threading.Event())]

    base = {"model": "m", "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    plain = generate(base)
    assert generate({**base, "bad_words": ["Paris"]}) != plain  # "... is Paris." without the name
    spec = SuppressionSpec(("Paris",))  # the guards' spec bans what the client's bad_words ban
    assert [s.token_id for s in backend._run("chat", base, threading.Event(), (spec,))] == generate(
        {**base, "bad_words": ["Paris"]}
    )
    body = {**base, "bad_words": ["Paris"], "logit_bias": {str(plain[0]): -100}}
    tokens = generate(body)
    assert tokens[0] != plain[0]  # the bias changed the greedy reply
    iv = Interventions.for_request(body, (), backend.tokenizer, backend.model.config.vocab_size)
    assert iv.banned and iv.bias
    assert not any(list(seq) == tokens[k : k + len(seq)] for seq in iv.banned for k in range(len(tokens)))
    scored = backend.scorer().score_many([(backend._prompt_ids("chat", body), tokens, iv)])[0]
    assert scored.argmax == tokens
    assert all(math.isfinite(lp) for lp in scored.logprobs)


@pytest.mark.integration
def test_reported_logprobs_are_the_ones_after_the_interventions(model_path: Path) -> None:
    """As vLLM's processed_logprobs: a banned token never shows among the alternatives (issue 18)."""
    from obliviate.proxy.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(model_path, "m")
    backend._load()
    base = {"model": "m", "messages": QUESTION, "max_tokens": 12, "temperature": 0, "logprobs": True}
    base["top_logprobs"] = 5

    def alternatives(body: dict) -> list[str]:
        return [text.strip() for s in backend._run("chat", body, threading.Event()) for text, _ in s.top]

    assert "Paris" in alternatives(base)  # precondition: the name is among the alternatives
    banned = {**base, "bad_words": ["Paris", " Paris"]}
    steps = list(backend._run("chat", banned, threading.Event()))
    assert "Paris" not in [text.strip() for s in steps for text, _ in s.top]
    assert all(math.isfinite(s.logprob) and s.logprob <= 0 for s in steps)


@pytest.mark.integration
@pytest.mark.slow
def test_contrastive_with_main_as_base_scores_like_the_unlearned_model(tmp_path_factory, model_path: Path) -> None:
    import numpy as np

    from obliviate.guards.assistant import ContrastiveConfig
    from obliviate.proxy.scoring import AnswerScorer
    from tests.contrastive_models import perturbed_copy

    unlearned = perturbed_copy(model_path, tmp_path_factory.mktemp("assistant") / "perturbed")
    config = ContrastiveConfig(mode="offset", alpha=1.0, base=model_path, unlearned=unlearned)
    fused = AnswerScorer.load(model_path, contrastive=config)
    own = AnswerScorer.load(unlearned)
    prompt_ids, answer_ids = fused.encode_chat(QUESTION, ANSWER)
    want = own.score(prompt_ids, answer_ids)
    got = fused.score(prompt_ids, answer_ids, contrastive=True)
    plain = fused.score(prompt_ids, answer_ids)
    assert np.allclose(got.logprobs, want.logprobs, atol=1e-4) and got.argmax == want.argmax
    assert not np.allclose(plain.logprobs, want.logprobs, atol=1e-3)  # the copy does differ


# -- POST /admin/score and obliviate.policy over HTTP ------------------------------------------------


async def test_score_needs_the_admin_key_and_a_scoring_model(make_client) -> None:
    client = await make_client(api_keys=["cli"], admin_key="adm")
    body = {"model": "fake-model", "items": [{"messages": QUESTION, "answer": "Paris."}]}
    r = await client.post("/admin/score", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await client.post("/admin/score", json=body, headers=CLIENT)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    r = await client.post("/admin/score", json=body, headers=ADMIN)  # the fake backend has no model folder
    assert r.status_code == 501 and r.json()["error"]["code"] == "scoring_unavailable"
    bad = [
        {"model": "fake-model", "items": []},
        {"model": "fake-model", "items": [{"messages": QUESTION}]},
        {"model": "fake-model", "items": [{"messages": QUESTION, "prompt": "Hi", "answer": "x"}]},
        {"model": "fake-model", "items": [{"answer": "x"}]},
        {"model": "fake-model", "items": "nope"},
        {**body, "obliviate": {"policy": "explode"}},
        {**body, "obliviate": {"policy": "refuse", "action": "pass"}},
        {**body, "obliviate": {"policy": "contrastive"}},
    ]
    for payload in bad:
        r = await client.post("/admin/score", json=payload, headers=ADMIN)
        assert r.status_code == 400, payload
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = await client.post("/admin/score", content=b"{", headers=ADMIN)
    assert r.status_code == 400
    r = await client.post("/admin/score", json={**body, "model": "other"}, headers=ADMIN)
    assert r.status_code == 404


async def test_policy_field_needs_the_admin_key(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(backend, api_keys=["cli"], admin_key="adm")
    body = {"model": "fake-model", "messages": QUESTION, "obliviate": {"policy": "refuse"}}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 403 and r.json()["error"]["param"] == "obliviate.policy"
    r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 200 and r.headers["x-obliviate-action"] == "pass"  # nothing matched
    assert "obliviate" not in backend.requests[-1][1]
    r = await client.post(
        "/v1/chat/completions", json={**body, "obliviate": {"policy": "refuse+rewrite"}}, headers=ADMIN
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_policy"


async def test_per_request_guard_fields_when_guards_are_disabled(make_client) -> None:
    client = await make_client(api_keys=["cli"], admin_key="adm", guard_enabled=False)
    chat = {"model": "fake-model", "messages": QUESTION}
    for options, status, code in [
        ({"output_guard": "off"}, 200, None),  # nothing to turn off: accepted
        ({"output_guard": "all"}, 400, "guards_disabled"),
        ({"policy": "refuse"}, 400, "guards_disabled"),
        ({"action": "refuse"}, 400, "guards_disabled"),
        ({"action": "pass"}, 200, None),
    ]:
        r = await client.post("/v1/chat/completions", json={**chat, "obliviate": options}, headers=ADMIN)
        assert r.status_code == status, (options, r.text)
        if code:
            assert r.json()["error"]["code"] == code
        r = await client.post("/v1/chat/completions", json={**chat, "obliviate": options}, headers=CLIENT)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"


@pytest.mark.integration
@pytest.mark.slow  # the real embedder and the bundled model
async def test_admin_score_applies_the_guard_per_item(tmp_path: Path, model_path: Path) -> None:
    from obliviate.proxy.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(model_path, "fake-model")
    settings = Settings(home=tmp_path, backend="transformers", model_id="fake-model", api_keys=["cli"], admin_key="adm")
    app = create_app(settings, backend=backend)
    async with (
        LifespanManager(app, startup_timeout=300) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False), base_url="http://proxy"
        ) as client,
    ):
        await _score_per_item(client)


async def _score_per_item(client: httpx.AsyncClient) -> None:
    assert (await client.post("/admin/forget", json=AUTHOR, headers=ADMIN)).status_code == 201
    name_item = {
        "messages": [{"role": "user", "content": "Who is Hsiao Yun-Hwa?"}],
        "answer": "Hsiao Yun-Hwa is a writer.",
    }
    plain_item = {"prompt": "The capital of Italy is", "answer": " Rome."}

    async def score(policy: str, **extra) -> list[dict]:
        body = {"model": "fake-model", "items": [name_item, plain_item], "obliviate": {"policy": policy}, **extra}
        r = await client.post("/admin/score", json=body, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert "Hsiao" not in r.text  # token ids and numbers only, never the forget set's text
        assert r.json()["object"] == "list"
        return r.json()["data"]

    refused, unmatched = await score("refuse")
    assert refused == {"index": 0, "scored": False, "reason": "refused", "action": "refuse"}
    assert unmatched["scored"] and unmatched["action"] == "pass" and all(v is not None for v in unmatched["logprobs"])

    passed, _ = await score("pass", vocab_stats=True)
    suppressed, other = await score("suppress")
    rewritten, _ = await score("rewrite")
    assert passed["action"] == "pass" and suppressed["action"] == "suppress" and rewritten["action"] == "rewrite"
    assert passed["tokens"] == suppressed["tokens"] == rewritten["tokens"]
    assert all(v is not None for v in passed["logprobs"]) and len(passed["mu"]) == len(passed["tokens"])
    assert None in suppressed["logprobs"]  # the name's completing tokens are banned: log p = -inf
    assert suppressed["mu"] == []
    assert rewritten["logprobs"] != passed["logprobs"]  # scored after the rewritten prompt
    # An unmatched item is untouched by the policy (alone here, right-padded in a batch there).
    assert other["logprobs"] == pytest.approx(unmatched["logprobs"], abs=1e-4)
    r = await client.post("/admin/score", json={"model": "fake-model", "items": [name_item]}, headers=CLIENT)
    assert r.status_code == 403


@pytest.mark.integration
def test_hf_system_generates_greedily_in_batches_and_scores_plainly(model_path: Path, scorer) -> None:
    from obliviate.evals.systems.base import ChatItem, ScoreItem, System
    from obliviate.evals.systems.hf import HFSystem
    from tests.contrastive_models import PROMPTS, greedy_chat

    system = HFSystem(model_path, batch_size=2)
    assert isinstance(system, System) and system.can_score and "no interventions" in system.describe()["score"]
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[5]]  # different lengths: left padding within a batch
    got = system.generate([ChatItem([{"role": "user", "content": p}]) for p in prompts], max_tokens=8)
    assert [g.text for g in got] == greedy_chat(model_path, prompts, 8)
    assert all(0 < g.completion_tokens <= 8 for g in got)
    scored = system.score(
        [ScoreItem(QUESTION, ANSWER), ScoreItem(answer="Paris is in France.", prompt="")], vocab_stats=True
    )
    want = scorer.score(*scorer.encode_chat(QUESTION, ANSWER))
    assert scored[0].logprobs == pytest.approx(want.logprobs, abs=1e-4) and len(scored[0].mu) == len(want.tokens)
    assert scored[1].scored and scored[1].tokens[-1] == scorer.tokenizer.eos_token_id
    system.close()
