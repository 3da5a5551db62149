"""The stage pipeline in the fast layer: the loop's order over fake stages, the empty pipeline, each
backend's mapping of the guards' specs, and the start-up check that a backend can execute the policy."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from obliviate.guards.decisions import Decision, EntryView, GuardContext
from obliviate.guards.errors import BadRequest
from obliviate.guards.pipeline import GuardPipeline, NoGuards
from obliviate.guards.policy import Policy
from obliviate.guards.specs import ContrastiveSpec, SuppressionSpec
from obliviate.guards.stages import Stage
from obliviate.proxy.backends.fake import FakeBackend
from obliviate.proxy.backends.openai_http import OpenAIHTTPBackend
from obliviate.proxy.backends.vllm_wire import vllm_body
from obliviate.proxy.protocol import ChatCompletionRequest

ADMIN = {"Authorization": "Bearer adm"}
CLIENT = {"Authorization": "Bearer cli"}
USER = SimpleNamespace(key_id="k1", is_admin=False)
ROOT = SimpleNamespace(key_id="admin", is_admin=True)
ENTRY = EntryView("e1", ("Hsiao Yun-Hwa",), "Who is Hsiao Yun-Hwa?", "A writer.", "t")


def request(content: str = "Who is Hsiao Yun-Hwa?", **kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": content}], **kw)


# the loop over fake stages --------------------------------------------------------------------


class View:
    """A forget set of one entry, without an index."""

    def is_empty(self) -> bool:
        return False

    def entries(self, ids):
        return {i: ENTRY for i in ids if i == ENTRY.id}


class Match(Stage):
    name = "match"

    def __init__(self, log: list[str], hit: bool = True) -> None:
        self.log, self.hit = log, hit

    def inspect_prompt(self, ctx: GuardContext) -> Decision:
        self.log.append(f"{self.name}.inspect_prompt")
        if not self.hit:
            return Decision("pass", self.name)
        return Decision("match", self.name, 0.9, (ENTRY.id,), ((ENTRY.id, 0.9),))


class Action(Stage):
    """Records each stage call; appends its name to the prompt; asks for a spec."""

    def __init__(self, name: str, log: list[str], spec=None, refuse: bool = False) -> None:
        self.name, self.log, self.spec, self.refuse = name, log, spec, refuse  # type: ignore[misc]

    def inspect_prompt(self, ctx: GuardContext) -> Decision | None:
        self.log.append(f"{self.name}.inspect_prompt")
        return Decision("refuse", self.name) if self.refuse else None

    def transform_request(self, body: dict, ctx: GuardContext) -> dict:
        self.log.append(f"{self.name}.transform_request")
        return {**body, "trail": [*body.get("trail", []), self.name]}

    def logits_spec(self, ctx: GuardContext):
        self.log.append(f"{self.name}.logits_spec")
        return self.spec


class Output(Stage):
    name = "output"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def inspect_output(self, ctx: GuardContext):
        self.log.append("output.inspect_output")
        return None


def pipeline(log: list[str], policy: str, *, hit: bool = True, refuse: bool = False) -> GuardPipeline:
    suppress, contrastive = SuppressionSpec(("Hsiao Yun-Hwa",)), ContrastiveSpec()
    actions = [
        Action("refuse", log, refuse=refuse),
        Action("rewrite", log),
        Action("contrastive", log, spec=contrastive),
        Action("suppress", log, spec=suppress),
    ]
    return GuardPipeline(
        View(),
        Policy({"default": policy}, contrastive_available=True),
        detectors=[Match(log, hit)],
        actions=actions,
        output_guard=Output(log),
        refusal="no",
    )


async def test_the_loop_runs_the_chosen_actions_in_the_configured_order() -> None:
    log: list[str] = []
    plan = await pipeline(log, "suppress+rewrite+contrastive").plan("chat", request(), USER, "r1")
    assert log == [
        "match.inspect_prompt",
        "rewrite.inspect_prompt",
        "rewrite.transform_request",
        "rewrite.logits_spec",
        "contrastive.inspect_prompt",
        "contrastive.transform_request",
        "contrastive.logits_spec",
        "suppress.inspect_prompt",
        "suppress.transform_request",
        "suppress.logits_spec",
        "output.inspect_output",
    ]
    assert plan.body["trail"] == ["rewrite", "contrastive", "suppress"] and plan.refusal is None
    assert plan.specs == (ContrastiveSpec(), SuppressionSpec(("Hsiao Yun-Hwa",)))
    assert [d.guard for d in plan.ctx.decisions] == ["match"] and plan.ctx.matched == {"e1": 0.9}
    assert plan.ctx.action_label == "suppress+rewrite+contrastive" and list(plan.ctx.entries) == ["e1"]


async def test_a_refusal_stops_the_loop_and_is_kept_on_the_context() -> None:
    log: list[str] = []
    plan = await pipeline(log, "refuse", refuse=True).plan("chat", request(), USER, "r1")
    assert log == ["match.inspect_prompt", "refuse.inspect_prompt"]
    assert plan.refusal == "no" and plan.specs == ()
    assert [(d.guard, d.verdict) for d in plan.ctx.decisions] == [("match", "match"), ("refuse", "refuse")]


async def test_no_match_runs_no_action_and_an_admin_can_force_one() -> None:
    log: list[str] = []
    plan = await pipeline(log, "rewrite+suppress", hit=False).plan("chat", request("hi"), USER, "r1")
    assert log == ["match.inspect_prompt", "output.inspect_output"]
    assert plan.body == request("hi").upstream_body() and plan.specs == () and plan.ctx.action_label == "pass"
    log.clear()
    forced = request("hi", obliviate={"action": "suppress"})
    plan = await pipeline(log, "rewrite", hit=False).plan("chat", forced, ROOT, "r2")
    assert plan.ctx.actions == ["suppress"] and plan.specs == (SuppressionSpec(("Hsiao Yun-Hwa",)),)
    assert "obliviate" not in plan.body


# the empty pipeline ---------------------------------------------------------------------------


async def test_no_guards_passes_the_request_as_sent() -> None:
    req = request(temperature=0, obliviate={"action": "pass", "output_guard": "off"})
    plan = await NoGuards().plan("chat", req, ROOT, "r1")
    assert plan.body == req.upstream_body() and plan.specs == () and plan.refusal is None
    assert plan.ctx.action_label == "pass" and plan.ctx.decisions == []
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hsiao Yun-Hwa"}}]}
    assert await plan.output.check_response("chat", body) is body
    for options, param in (
        ({"action": "refuse"}, "action"),
        ({"policy": "rewrite"}, "policy"),
        ({"output_guard": "all"}, "output_guard"),
    ):
        with pytest.raises(BadRequest) as err:
            await NoGuards().plan("chat", request(obliviate=options), ROOT, "r1")
        assert err.value.code == "guards_disabled" and err.value.param == f"obliviate.{param}"


async def test_guards_off_through_the_app(make_client) -> None:
    backend = FakeBackend("fake-model")
    client = await make_client(
        backend, api_keys=["cli"], admin_key="adm", guard_enabled=False, client_decision_headers=True
    )
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "bad_words": ["x"]}
    r = await client.post("/v1/chat/completions", json=body, headers=CLIENT)
    assert r.status_code == 200 and r.headers["x-obliviate-action"] == "pass"
    assert backend.requests[-1][1] == body
    r = await client.post("/v1/chat/completions", json={**body, "obliviate": {"action": "refuse"}}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "guards_disabled"


# each backend's mapping of each spec ----------------------------------------------------------


def test_vllm_mapping_of_each_spec() -> None:
    body = {"model": "m", "bad_words": ["own", "Paris"], "vllm_xargs": {"session_id": "s1"}}
    kept = json.loads(json.dumps(body))
    out = vllm_body(body, [ContrastiveSpec(), SuppressionSpec(("Paris", "Hsiao Yun-Hwa"))])
    assert out["bad_words"] == ["own", "Paris", "Hsiao Yun-Hwa"]  # the client's first, no duplicate
    assert out["vllm_xargs"] == {"session_id": "s1", "obliviate_contrastive": 1}
    assert list(out) == ["model", "bad_words", "vllm_xargs"] and body == kept  # not mutated
    assert vllm_body({"model": "m"}, [ContrastiveSpec(alpha=0.5)]) == {
        "model": "m",
        "vllm_xargs": {"obliviate_contrastive": 1, "obliviate_alpha": 0.5},
    }
    assert vllm_body({"model": "m"}, [SuppressionSpec(())]) == {"model": "m"}
    assert vllm_body(body, []) is body


async def test_the_http_backend_sends_the_mapped_body_to_vllm_and_none_to_another_server() -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"id": "x", "choices": []})

    specs = (ContrastiveSpec(), SuppressionSpec(("Hsiao Yun-Hwa",)))
    vllm = OpenAIHTTPBackend("http://upstream/v1")
    assert vllm.capabilities == {"suppress", "contrastive"} and vllm.name == "vllm"
    vllm._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://upstream/v1")
    await vllm.complete("chat", {"model": "m"}, specs)
    assert sent[-1] == {"model": "m", "vllm_xargs": {"obliviate_contrastive": 1}, "bad_words": ["Hsiao Yun-Hwa"]}
    other = OpenAIHTTPBackend("http://upstream/v1", engine="openai")
    assert other.capabilities == frozenset() and other.name == "openai-http (non-vLLM upstream)"
    other._client = vllm._client
    await other.complete("chat", {"model": "m", "bad_words": ["own"]})
    assert sent[-1] == {"model": "m", "bad_words": ["own"]}  # a client's own fields pass as sent
    with pytest.raises(TypeError):
        await other.complete("chat", {"model": "m"}, specs)
    await vllm._client.aclose()


async def test_the_fake_backend_records_what_a_vllm_server_would_receive() -> None:
    backend = FakeBackend("m")
    await backend.complete(
        "chat", {"model": "m", "messages": [{"role": "user", "content": "a b"}]}, (SuppressionSpec(("b",)),)
    )
    assert backend.requests[-1][1]["bad_words"] == ["b"]
    chunks = [c async for c in backend.stream("completion", {"model": "m", "prompt": "a"}, (ContrastiveSpec(),))]
    assert chunks and backend.requests[-1][1]["vllm_xargs"] == {"obliviate_contrastive": 1}


# the start-up check ---------------------------------------------------------------------------


def test_a_policy_the_backend_cannot_execute_fails_at_start_up(tmp_path: Path) -> None:
    from obliviate.proxy.app import create_app
    from obliviate.proxy.settings import Settings

    settings = Settings(
        home=tmp_path, upstream="http://upstream:8001/v1", upstream_engine="openai", index_embedder="hashing"
    )  # the default policy: rewrite+suppress
    with pytest.raises(
        ValueError,
        match=r"guard policy 'default' uses 'suppress', which backend "
        r"'openai-http \(non-vLLM upstream\)' cannot execute",
    ):
        create_app(settings)
    for policy in ("refuse", "rewrite"):  # the proxy executes these itself
        create_app(settings.model_copy(update={"guard_policy": {"default": policy}}))
    create_app(settings.model_copy(update={"guard_enabled": False}))  # no guards: nothing to execute
    fake = Settings(home=tmp_path, backend="fake", index_embedder="hashing", guard_policy={"k": "suppress"})
    with pytest.raises(ValueError, match="'k' uses 'suppress', which backend 'fake' cannot execute"):
        create_app(fake, backend=FakeBackend(capabilities=frozenset()))


async def test_a_request_for_an_action_the_backend_cannot_execute_is_a_400(make_client) -> None:
    backend = FakeBackend("fake-model", capabilities=frozenset())
    client = await make_client(
        backend, api_keys=["cli"], admin_key="adm", index_embedder="hashing", guard_policy={"default": "rewrite"}
    )
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    for options, param in (
        ({"action": "suppress"}, "obliviate.action"),
        ({"policy": "rewrite+suppress"}, "obliviate.policy"),
    ):
        r = await client.post("/v1/chat/completions", json={**chat, "obliviate": options}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["code"] == "action_unavailable", r.text
        assert r.json()["error"]["param"] == param and "'fake'" in r.json()["error"]["message"]
    r = await client.post("/v1/chat/completions", json={**chat, "obliviate": {"action": "refuse"}}, headers=ADMIN)
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"


def test_the_embedded_engine_executes_every_spec(tmp_path: Path) -> None:
    from obliviate.proxy.backends.vllm_embedded import EmbeddedVLLMBackend
    from obliviate.proxy.engine import EngineSupervisor
    from obliviate.proxy.settings import Settings

    backend = EmbeddedVLLMBackend(Settings(home=tmp_path), tmp_path)  # nothing starts before start()
    assert isinstance(backend.engine, EngineSupervisor) and backend.name == "vllm-embedded"
    assert backend.capabilities == {"suppress", "contrastive"}
