"""TOFU / MUSE-News runners on a deterministic fake system, the logs they write, and EndpointSystem
against the proxy app (fake backend).

The fake system's scores follow a known rule, so every result can be recomputed here: an answer of
``c`` characters gets one token per word, each with log-probability ``-c / 100``, plus an
end-of-sequence token with log-probability ``-EOS_LOSS``; the argmax misses only the first token;
mu = -1, var = 1. ``*_Prob`` and ``mia_loss`` average over all tokens, Min-K% leaves the EOS out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from obliviate.evals import data, logs, muse
from obliviate.evals.metrics.rouge import rouge_scores
from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem
from obliviate.unlearn.benchmark_data import data_dir, tofu_split

DATA = data_dir() if data_dir().is_dir() else None
pytestmark = pytest.mark.skipif(DATA is None, reason="benchmark data folder not found (OBLIVIATE_DATA_DIR)")

REF_TOFU = "tofu/open_unlearning_eval_logs/tofu_Llama-3.2-1B-Instruct_full/evals_forget01"
REF_RETAIN99 = "tofu/open_unlearning_eval_logs/tofu_Llama-3.2-1B-Instruct_retain99"
REF_MUSE = "muse_eval_logs/muse_Llama-2-7b-hf_News_target"
REF_MUSE_RETRAIN = "muse_eval_logs/muse_Llama-2-7b-hf_News_retrain"
UNSUPPORTED = {"mia_gradnorm", "mia_reference"}
EOS = 0
EOS_LOSS = 2.0


def loss_of(answer: str) -> float:
    """The NLL of each word token (Min-K% of the answer without its EOS)."""
    return len(answer) / 100


def avg_loss_of(answer: str) -> float:
    """The mean NLL over the word tokens and the EOS (``*_Prob``, ``mia_loss``)."""
    words = len(answer.split())
    return (words * loss_of(answer) + EOS_LOSS) / (words + 1)


def last_user(item: ChatItem | ScoreItem) -> str:
    return item.prompt if item.prompt is not None else item.messages[-1]["content"]


class FakeSystem:
    name = "fake"

    def __init__(self, *, can_score: bool = True, refuse: Callable[[str], bool] = lambda text: False) -> None:
        self._can_score, self.refuse = can_score, refuse
        self.generated: list[ChatItem] = []
        self.scored: list[tuple[ScoreItem, bool]] = []

    @property
    def can_score(self) -> bool:
        return self._can_score

    def describe(self) -> dict[str, str]:
        return {"generation": "echo", "scoring": "length rule" if self._can_score else "none"}

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        self.generated += items
        return [
            Generation("I can't help.", "refuse") if self.refuse(last_user(i)) else Generation(last_user(i)[-300:])
            for i in items
        ]

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        if not self._can_score:
            raise NotImplementedError("cannot score")
        out = []
        for item in items:
            self.scored.append((item, vocab_stats))
            if self.refuse(last_user(item)):
                out.append(ScoredAnswer(scored=False, action="refuse", reason="refused"))
                continue
            tokens = [len(w) for w in item.answer.split()] + [EOS]
            n = len(tokens)
            out.append(
                ScoredAnswer(
                    scored=True,
                    tokens=tokens,
                    logprobs=[-loss_of(item.answer)] * (n - 1) + [-EOS_LOSS],
                    argmax=[tokens[0] + 1, *tokens[1:]],
                    mu=[-1.0] * n if vocab_stats else [],
                    var=[1.0] * n if vocab_stats else [],
                )
            )
        return out

    def close(self) -> None:
        pass


def reference(rel: str, benchmark: str = "TOFU") -> dict:
    return logs.read_eval(DATA / rel, benchmark)


def supported(keys) -> set[str]:
    return set(keys) - UNSUPPORTED


# TOFU --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tofu_results() -> dict:
    from obliviate.evals.tofu_run import run_tofu

    return run_tofu(
        FakeSystem(), "forget01", limit=4, retain_logs=reference(REF_RETAIN99), max_tokens=8, progress=False
    )


def test_tofu_has_every_supported_result_of_the_reference_log(tofu_results: dict) -> None:
    metrics = {k for k in tofu_results if k != "run"}
    assert metrics == supported(reference(REF_TOFU))
    for name in metrics:
        assert tofu_results[name]["agg_value"] is not None, name
        assert "not_applicable" not in tofu_results[name], name


def test_tofu_results_recompute_from_the_fake_rule(tofu_results: dict) -> None:
    forget = tofu_split("forget01", limit=4)
    pert = tofu_split("forget01_perturbed", limit=4)
    holdout = tofu_split("holdout01", limit=4)
    probs = [math.exp(-avg_loss_of(r["answer"])) for r in forget]
    assert tofu_results["forget_Q_A_Prob"]["agg_value"] == pytest.approx(np.mean(probs))
    assert tofu_results["forget_Q_A_Prob"]["value_by_index"]["2"]["avg_loss"] == pytest.approx(
        avg_loss_of(forget[2]["answer"])
    )
    # PERT: one loss per perturbed answer; truth ratio = geometric-mean P(wrong) / P(paraphrase)
    item = tofu_results["forget_Q_A_PERT_Prob"]["value_by_index"]["1"]
    assert item["avg_loss"] == pytest.approx([avg_loss_of(a) for a in pert[1]["perturbed_answer"]])
    wrong = math.exp(-np.mean([avg_loss_of(a) for a in pert[1]["perturbed_answer"]]))
    right = math.exp(-avg_loss_of(pert[1]["paraphrased_answer"]))
    assert tofu_results["forget_truth_ratio"]["value_by_index"]["1"]["score"] == pytest.approx(wrong / (right + 1e-10))
    # memorization: the argmax misses the first of the answer's words (EOS left out)
    em = [(len(r["answer"].split()) - 1) / len(r["answer"].split()) for r in forget]
    assert tofu_results["exact_memorization"]["agg_value"] == pytest.approx(np.mean(em))
    # MIA loss: forget vs holdout avg losses (which include the EOS token)
    from sklearn.metrics import roc_auc_score

    f, h = [avg_loss_of(r["answer"]) for r in forget], [avg_loss_of(r["answer"]) for r in holdout]
    assert tofu_results["mia_loss"]["forget"]["value_by_index"]["3"]["score"] == pytest.approx(f[3])
    assert tofu_results["mia_loss"]["auc"] == pytest.approx(roc_auc_score([0] * 4 + [1] * 4, f + h))
    # Min-K% leaves the EOS out: the answer's word tokens all have the same log-prob
    assert tofu_results["mia_min_k"]["forget"]["value_by_index"]["0"]["score"] == pytest.approx(
        loss_of(forget[0]["answer"])
    )
    mu_var = 1.0  # Min-K%++: (logp - mu) / sqrt(var) with mu = -1, var = 1
    assert tofu_results["mia_min_k_plus_plus"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(
        -(-loss_of(forget[1]["answer"]) + 1.0) / mu_var
    )
    # ROUGE: the fake echoes the question; recall of the answer
    rouge0 = tofu_results["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert rouge0["generation"] == forget[0]["question"] and rouge0["ground_truth"] == forget[0]["answer"]
    assert rouge0["rougeL_recall"] == pytest.approx(
        rouge_scores(forget[0]["question"], forget[0]["answer"])["rougeL_recall"]
    )
    # privleak relative to the retain log's min-k AUC
    ref_auc = reference(REF_RETAIN99)["mia_min_k"]["agg_value"]
    auc = tofu_results["mia_min_k"]["agg_value"]
    assert tofu_results["privleak"]["agg_value"] == pytest.approx(
        ((1 - auc) - (1 - ref_auc)) / (1 - ref_auc + 1e-10) * 100
    )


def test_tofu_uses_open_unlearnings_qa_pairs() -> None:
    from obliviate.evals.tofu_run import run_tofu

    system = FakeSystem()
    run_tofu(system, "forget01", limit=2, max_tokens=8, progress=False)
    answers = {item.answer for item, _ in system.scored}
    pert = tofu_split("forget01_perturbed", limit=2)
    ra = tofu_split("real_authors_perturbed", limit=2)
    assert pert[0]["paraphrased_answer"] in answers and pert[0]["perturbed_answer"][4] in answers
    assert ra[1]["answer"] in answers and ra[1]["perturbed_answer"][2] in answers
    assert tofu_split("holdout01", limit=2)[1]["answer"] in answers
    assert all(len(item.messages) == 1 and item.messages[0]["role"] == "user" for item, _ in system.scored)
    # vocab moments only where Min-K%++ needs them: the forget and holdout answers
    with_stats = {item.answer for item, stats in system.scored if stats}
    assert with_stats == {r["answer"] for r in tofu_split("forget01", limit=2)} | {
        r["answer"] for r in tofu_split("holdout01", limit=2)
    }


def test_tofu_leaves_unscored_items_out_and_counts_them() -> None:
    from obliviate.evals.tofu_run import run_tofu

    forget = tofu_split("forget01", limit=4)
    refused = {forget[0]["question"], forget[2]["question"]}
    results = run_tofu(FakeSystem(refuse=refused.__contains__), "forget01", limit=4, max_tokens=8, progress=False)
    prob = results["forget_Q_A_Prob"]
    assert prob["value_by_index"]["0"] is None and prob["value_by_index"]["2"] is None
    assert (prob["scored_items"], prob["total_items"]) == (2, 4)
    kept = [math.exp(-avg_loss_of(forget[i]["answer"])) for i in (1, 3)]
    assert prob["agg_value"] == pytest.approx(np.mean(kept))
    assert results["forget_truth_ratio"]["value_by_index"]["0"] is None
    assert results["mia_min_k"]["forget_scored"] == 2 and len(results["mia_min_k"]["forget"]["value_by_index"]) == 2
    assert results["exact_memorization"]["value_by_index"]["2"] is None
    assert "forget_Q_A_Prob" in results["run"]["scored_items"]
    assert results["run"]["generation_actions"]["refuse"] == 2
    assert results["run"]["scoring_actions"]["refuse"] >= 2
    # the retain-side results are untouched
    assert "scored_items" not in results["retain_Q_A_Prob"]


def test_tofu_generation_only_system() -> None:
    from obliviate.evals.tofu_run import run_tofu

    results = run_tofu(FakeSystem(can_score=False), "forget01", limit=2, max_tokens=8, progress=False)
    for name in ("forget_Q_A_ROUGE", "retain_Q_A_ROUGE", "ra_Q_A_ROUGE", "wf_Q_A_ROUGE"):
        assert results[name]["agg_value"] is not None
    for name in ("forget_Q_A_Prob", "forget_truth_ratio", "mia_min_k", "model_utility", "privleak", "forget_quality"):
        assert results[name]["agg_value"] is None and results[name]["not_applicable"], name
    assert any(x.startswith("forget_Q_A_Prob") for x in results["run"]["not_applicable"])
    assert results["run"]["system"]["can_score"] is False


def test_tofu_limit_takes_the_first_items() -> None:
    from obliviate.evals.tofu_run import run_tofu

    results = run_tofu(FakeSystem(), "forget05", limit=3, max_tokens=8, progress=False)
    for name in ("forget_Q_A_Prob", "retain_Q_A_PARA_Prob", "wf_Q_A_PERT_Prob", "ra_Q_A_ROUGE", "extraction_strength"):
        assert list(results[name]["value_by_index"]) == ["0", "1", "2"], name
    assert list(results["mia_loss"]["holdout"]["value_by_index"]) == ["0", "1", "2"]
    assert results["run"]["holdout_split"] == "holdout05"
    assert results["run"]["counts"] == {"forget": 3, "forget_perturbed": 3, "holdout": 3, "retain": 3, "ra": 3, "wf": 3}
    assert results["forget_Q_A_ROUGE"]["value_by_index"]["2"]["ground_truth"] == tofu_split("forget05")[2]["answer"]


def test_write_tofu_matches_the_reference_shape(tofu_results: dict, tmp_path: Path) -> None:
    from obliviate.evals.tofu_run import write_tofu

    write_tofu(tmp_path, tofu_results)
    ref = reference(REF_TOFU)
    written = logs.read_eval(tmp_path, "TOFU")
    assert set(written) == supported(ref)
    for name, res in written.items():
        assert set(res) == set(ref[name]), name
        for part in ("value_by_index", "forget", "holdout"):
            if part in ref[name]:
                got = res[part] if part == "value_by_index" else res[part]["value_by_index"]
                want = ref[name][part] if part == "value_by_index" else ref[name][part]["value_by_index"]
                assert set(got["0"]) == set(want["0"]), (name, part)
    summary = logs.read_summary(tmp_path, "TOFU")
    assert set(summary) == supported(logs.read_summary(DATA / REF_TOFU, "TOFU"))
    assert summary["forget_Q_A_Prob"] == written["forget_Q_A_Prob"]["agg_value"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["system"]["describe"] == FakeSystem().describe()
    assert run["split"] == "forget01" and run["tofu"]["limit"] == 4 and run["tofu"]["wall_s"] > 0
    assert any("mia_gradnorm" in x for x in run["not_applicable"])


# MUSE --------------------------------------------------------------------------------------------
def test_muse_news_runs_knowmem_verbmem_privleak(tmp_path: Path) -> None:
    from obliviate.evals.muse_run import run_muse_news, write_muse

    system = FakeSystem()
    results = run_muse_news(system, limit=3, progress=False)
    # KnowMem: ten ICL demos as chat turns, then the question
    chats = [i for i in system.generated if i.prompt is None]
    assert len(chats) == 6 and len(chats[0].messages) == 21
    demos = data.muse_news("forget_qa_icl")
    assert chats[0].messages[:2] == [
        {"role": "user", "content": demos[0]["question"]},
        {"role": "assistant", "content": demos[0]["answer"]},
    ]
    qa = data.muse_news("forget_qa", limit=3)
    item = results["forget_knowmem_ROUGE"]["value_by_index"]["1"]
    assert item["generation"] == qa[1]["question"]
    assert item["rougeL_f1"] == pytest.approx(rouge_scores(qa[1]["question"], qa[1]["answer"])["rougeL_f1"])
    # VerbMem: plain-text continuation of the prompt
    verb = data.muse_news("verbmem_forget", limit=3)
    assert [i.prompt for i in system.generated if i.prompt is not None] == [r["prompt"] for r in verb]
    assert results["forget_verbmem_ROUGE"]["value_by_index"]["0"]["ground_truth"] == verb[0]["gt"]
    # PrivLeak: raw text scored as plain text; without a retrained model the AUC stays raw
    texts = data.muse_news("privleak_forget", limit=3)
    scored = [i for i, _ in system.scored]
    assert all(i.prompt is not None and not i.messages for i in scored)
    assert scored[0].prompt == "" and scored[0].answer == texts[0]
    assert results["privleak"]["agg_value"] is None and "no retrained model" in results["privleak"]["not_applicable"]
    assert results["privleak"]["auc"] == results["mia_min_k"]["agg_value"]
    assert results["mia_min_k"]["forget"]["value_by_index"]["2"]["score"] == pytest.approx(loss_of(scored[2].answer))
    # raw text has no EOS in open-unlearning: the loss leaves the appended one out
    assert results["mia_loss"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(loss_of(scored[1].answer))

    write_muse(tmp_path, results)
    ref = reference(REF_MUSE, "MUSE")
    written = logs.read_eval(tmp_path, "MUSE")
    assert set(written) == supported(ref) - {"exact_memorization", "extraction_strength"}
    for name in ("forget_knowmem_ROUGE", "forget_verbmem_ROUGE", "mia_min_k_plus_plus"):
        assert set(written[name]) == set(ref[name])
    assert "privleak" not in logs.read_summary(tmp_path, "MUSE")


def test_muse_privleak_relative_to_the_retrained_model() -> None:
    from obliviate.evals.muse_run import run_muse_news

    retrain = reference(REF_MUSE_RETRAIN, "MUSE")
    results = run_muse_news(FakeSystem(), limit=3, retrain_logs=retrain, progress=False)
    auc, ref = results["mia_min_k"]["agg_value"], retrain["mia_min_k"]["agg_value"]
    assert results["privleak"]["agg_value"] == pytest.approx(((1 - auc) - (1 - ref)) / (1 - ref + 1e-10) * 100)
    assert set(muse.SUMMARY_METRICS) >= {k for k in results if k != "run"}


def test_tofu_and_muse_share_run_json(tofu_results: dict, tmp_path: Path) -> None:
    from obliviate.evals.muse_run import run_muse_news, write_muse
    from obliviate.evals.tofu_run import write_tofu

    write_tofu(tmp_path, tofu_results)
    write_muse(tmp_path, run_muse_news(FakeSystem(can_score=False), limit=2, progress=False))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["tofu"]["split"] == "forget01" and run["muse"]["benchmark"] == "MUSE-News"
    assert any(x.startswith("muse: mia_min_k") for x in run["not_applicable"])
    assert any(x.startswith("tofu: mia_gradnorm") for x in run["not_applicable"])


# EndpointSystem ----------------------------------------------------------------------------------
@pytest.fixture
def proxy_app(tmp_path: Path):
    from starlette.testclient import TestClient

    from obliviate.proxy.app import create_app
    from obliviate.proxy.backends.fake import FakeBackend
    from obliviate.proxy.settings import Settings

    backend = FakeBackend("fake-model")
    app = create_app(Settings(home=tmp_path, backend="fake", model_id="fake-model", admin_key="adm"), backend=backend)
    with TestClient(app, base_url="http://proxy") as client:
        yield client, backend


def test_endpoint_generates_through_the_proxy(proxy_app) -> None:
    from obliviate.evals.systems.endpoint import EndpointSystem

    client, backend = proxy_app
    system = EndpointSystem("http://proxy/v1", "fake-model", concurrency=4, http_client=client)
    questions = [f"question number {i}" for i in range(6)]
    gens = system.generate([ChatItem([{"role": "user", "content": q}]) for q in questions], max_tokens=16)
    assert [g.text for g in gens] == [f"echo: {q}" for q in questions]
    assert all(g.action == "unknown" for g in gens)  # a client sees no decision header
    kind, sent = backend.requests[-1]
    assert kind == "chat" and sent["temperature"] == 0 and sent["max_tokens"] == 16
    admin = EndpointSystem("http://proxy/v1", "fake-model", admin_key="adm", http_client=client)
    assert [g.action for g in admin.generate([ChatItem([{"role": "user", "content": "hi"}])], max_tokens=4)] == ["pass"]
    (plain,) = system.generate([ChatItem(prompt="once upon a time")], max_tokens=16)
    assert plain.text == "echo: once upon a time" and backend.requests[-1][0] == "completion"
    assert not system.can_score
    with pytest.raises(NotImplementedError, match="admin key"):
        system.score([ScoreItem([{"role": "user", "content": "q"}], "a")])
    assert "no admin key" in system.describe()["scoring"]
    system.close()


def test_endpoint_policy_needs_and_uses_the_admin_key(proxy_app) -> None:
    from obliviate.evals.systems.endpoint import EndpointSystem

    client, backend = proxy_app
    with pytest.raises(ValueError, match="admin key"):
        EndpointSystem("http://proxy/v1", "fake-model", policy="refuse", http_client=client)
    system = EndpointSystem("http://proxy/v1", "fake-model", admin_key="adm", policy="refuse", http_client=client)
    (gen,) = system.generate([ChatItem([{"role": "user", "content": "hello"}])], max_tokens=8)
    assert gen.text == "echo: hello"  # nothing in the forget set matches
    assert "obliviate" not in backend.requests[-1][1]  # our namespace is not forwarded upstream
    assert system.can_score and "refuse" in system.describe()["generation"]
    system.close()
    with pytest.raises(ValueError, match="admin key"):
        EndpointSystem("http://proxy/v1", "fake-model", output_guard="off", http_client=client)
    system = EndpointSystem("http://proxy/v1", "fake-model", admin_key="adm", output_guard="off", http_client=client)
    assert system._extra_body() == {"obliviate": {"output_guard": "off"}}
    (gen,) = system.generate([ChatItem([{"role": "user", "content": "hello"}])], max_tokens=8)
    assert gen.text == "echo: hello" and "output_guard" in system.describe()["generation"]
    system.close()


def test_endpoint_scoring_maps_the_admin_score_response() -> None:
    from obliviate.evals.systems.endpoint import EndpointSystem

    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/admin/score" and request.headers["authorization"] == "Bearer adm"
        body = json.loads(request.content)
        seen.append(body)
        data = [
            {"index": 1, "scored": False, "action": "refuse", "reason": "refused"},
            {
                "index": 0,
                "scored": True,
                "action": "suppress",
                "tokens": [5, 2],
                "logprobs": [-0.5, None],
                "argmax": [5, 3],
                "mu": [-1.0, -2.0],
                "var": [0.5, 0.25],
                "reason": None,
            },
        ]
        return httpx.Response(200, json={"object": "list", "data": data})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    system = EndpointSystem("http://proxy/v1", "m", admin_key="adm", policy="suppress", http_client=http)
    scored = system.score(
        [ScoreItem([{"role": "user", "content": "q"}], "a"), ScoreItem(prompt="p", answer=" b")], vocab_stats=True
    )
    assert seen[0]["items"] == [
        {"messages": [{"role": "user", "content": "q"}], "answer": "a"},
        {"prompt": "p", "answer": " b"},
    ]
    assert seen[0]["vocab_stats"] is True and seen[0]["obliviate"] == {"policy": "suppress"} and seen[0]["model"] == "m"
    assert scored[0].scored and scored[0].logprobs == [-0.5, -math.inf] and scored[0].action == "suppress"
    assert scored[0].avg_loss == math.inf and scored[0].mu == [-1.0, -2.0]
    assert not scored[1].scored and scored[1].action == "refuse" and scored[1].reason == "refused"
    system.close()


# Integration: the bundled model end to end ---------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow  # ~17 s on 2 cores
def test_run_tofu_on_the_bundled_model(model_path: Path, tmp_path: Path) -> None:
    hf = pytest.importorskip("obliviate.evals.systems.hf")
    from obliviate.evals.tofu_run import run_tofu, write_tofu

    system = hf.HFSystem(model_path)
    try:
        results = run_tofu(system, "forget01", limit=3, max_tokens=16, progress=False)
    finally:
        system.close()
    assert 0 < results["forget_Q_A_Prob"]["agg_value"] < 1
    assert 0 <= results["forget_Q_A_ROUGE"]["agg_value"] <= 1
    assert 0 <= results["mia_min_k"]["agg_value"] <= 1 and results["model_utility"]["agg_value"] is not None
    assert all(len(r["value_by_index"]) == 3 for k, r in results.items() if k.endswith("_Prob"))
    write_tofu(tmp_path, results)
    assert set(logs.read_summary(tmp_path, "TOFU")) == supported(logs.read_summary(DATA / REF_TOFU, "TOFU")) - {
        "forget_quality"
    }


@pytest.mark.integration
def test_endpoint_scores_like_the_model_folder(model_path: Path, tmp_path: Path) -> None:
    """/admin/score through EndpointSystem (fake generation backend, the bundled model as the scoring
    copy, nothing in the forget set) gives the model folder's own scores."""
    hf = pytest.importorskip("obliviate.evals.systems.hf")
    from starlette.testclient import TestClient

    from obliviate.evals.systems.endpoint import EndpointSystem
    from obliviate.proxy.app import create_app
    from obliviate.proxy.backends.fake import FakeBackend
    from obliviate.proxy.settings import Settings

    items = [
        ScoreItem([{"role": "user", "content": "Who wrote Hamlet?"}], "William Shakespeare"),
        ScoreItem(prompt="The cat", answer=" sat on the mat"),
    ]
    settings = Settings(home=tmp_path, backend="fake", model_id="fake-model", admin_key="adm", score_model=model_path)
    with TestClient(create_app(settings, backend=FakeBackend("fake-model")), base_url="http://proxy") as client:
        system = EndpointSystem("http://proxy/v1", "fake-model", admin_key="adm", http_client=client)
        got = system.score(items, vocab_stats=True)
        system.close()
    local = hf.HFSystem(model_path)
    try:
        want = local.score(items, vocab_stats=True)
    finally:
        local.close()
    for g, w in zip(got, want):
        assert g.scored and g.action == "pass"
        assert g.tokens == w.tokens and g.argmax == w.argmax and len(g.mu) == len(g.tokens)
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
