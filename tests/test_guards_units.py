"""Pure pieces of the guards: logit math, alias matching, suppression specs, rewriting, policy."""

from __future__ import annotations

import pytest
import torch

from obliviate.guards.aliases import AliasMatcher, derive_aliases
from obliviate.guards.decisions import EntryView
from obliviate.guards.logit_math import ban_sequences, bias_tokens
from obliviate.guards.policy import parse_policy
from obliviate.guards.rewrite import DEMO_REFUSAL, rewrite_messages, rewrite_prompt
from obliviate.guards.suppression import build_spec, tokenize_bad_words
from obliviate.proxy.backends.vllm_wire import vllm_body


def entry(id: str = "e1", aliases=("Hsiao Yun-Hwa",), question=None, answer=None, text="t") -> EntryView:
    return EntryView(id, tuple(aliases), question, answer, text)


# logit math ---------------------------------------------------------------------------------


def test_ban_sequences_single_and_multi_token() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    out = ban_sequences([2, 3], logits, [[1], [3, 4], [2, 2, 0]])
    assert out.tolist() == [0.0, float("-inf"), 2.0, 3.0, float("-inf")]
    assert logits.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # input not mutated


def test_ban_sequences_prefix_must_match_the_tail() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0])
    assert ban_sequences([1, 0], logits, [[1, 2]]) is logits  # prefix not at the end: nothing banned
    assert ban_sequences([], logits, [[1, 2]]) is logits
    assert ban_sequences([0, 1], logits, [[0, 1, 2]]).tolist() == [0.0, 1.0, float("-inf")]


def test_bias_tokens() -> None:
    logits = torch.tensor([1.0, 1.0, 1.0])
    assert bias_tokens(logits, {}) is logits
    assert bias_tokens(logits, {2: -5.0, 0: 0.5}).tolist() == [1.5, 1.0, -4.0]
    assert logits.tolist() == [1.0, 1.0, 1.0]


# aliases ------------------------------------------------------------------------------------


def test_alias_matcher_folds_case_accents_and_spaces() -> None:
    m = AliasMatcher({"a": ["José Álvarez"], "b": ["Hsiao Yun-Hwa"], "c": ["Ann"]})
    text = "We met JOSE   alvarez and hsiao yun-hwa."
    hits = m.find(text)
    assert [h.entry_ids for h in hits] == [("a",), ("b",)]
    assert text[hits[0].start : hits[0].end] == "JOSE   alvarez"
    assert text[hits[1].start : hits[1].end] == "hsiao yun-hwa"


def test_alias_matcher_respects_word_boundaries() -> None:
    m = AliasMatcher({"p": ["Paris"]})
    assert m.entry_ids("a parisian café") == set()
    assert m.entry_ids("Comparison") == set()
    assert m.entry_ids("in Paris, today") == {"p"}
    assert m.entry_ids("PARIS") == {"p"}


def test_alias_matcher_many_aliases() -> None:
    m = AliasMatcher({f"e{i}": [f"Person Number{i}"] for i in range(5000)})
    assert m.size == 5000
    assert m.entry_ids("I read about person number4321 yesterday") == {"e4321"}


def test_derive_aliases_keeps_names_not_places_or_genres() -> None:
    q = "What is the full name of the author born in Addis Ababa, Ethiopia who writes Historical Fiction?"
    a = "The author's full name is Bezabih Gebre, born in Johannesburg, South Africa."
    assert derive_aliases(q, a) == ["Bezabih Gebre"]


# suppression --------------------------------------------------------------------------------


def test_build_spec_orders_aliases_first_and_respects_limits() -> None:
    e1 = entry("e1", ("Hsiao Yun-Hwa",), answer="Hsiao Yun-Hwa was born in Taipei in 1991.")
    e2 = entry("e2", ("Jaime Vasquez",), answer="Jaime Vasquez wrote about Santiago.")
    spec = build_spec([e1, e2])
    assert spec.phrases[:4] == ("Hsiao Yun-Hwa", "hsiao yun-hwa", "Jaime Vasquez", "jaime vasquez")
    assert "Taipei" in spec.phrases and "1991" in spec.phrases and "Santiago" in spec.phrases
    small = build_spec([e1, e2], max_sequences=4)
    assert len(small.phrases) == 2 and small.dropped > 0  # two phrases = four sequences (with/without space)
    by_tokens = build_spec([e1, e2], max_tokens=20, count_tokens=lambda s: 5)
    assert len(by_tokens.phrases) == 2
    assert not build_spec([]) and vllm_body({"model": "m"}, [build_spec([])]) == {"model": "m"}  # nothing to ban


def test_tokenize_bad_words_adds_the_leading_space_form() -> None:
    vocab = {"Paris": [7], " Paris": [8], "x": [1]}
    seqs = tokenize_bad_words(["Paris", "x"], lambda s: vocab.get(s, [9, 9]))
    assert seqs == [[7], [8], [1], [9, 9]]


# rewrite ------------------------------------------------------------------------------------


def test_rewrite_adds_instruction_and_demos_without_mutating() -> None:
    msgs = [{"role": "user", "content": "Who is Hsiao Yun-Hwa?"}]
    e = entry(question="Where was Hsiao Yun-Hwa born?")
    out = rewrite_messages(msgs, [e])
    assert msgs == [{"role": "user", "content": "Who is Hsiao Yun-Hwa?"}]
    assert out[0]["role"] == "system" and "Hsiao Yun-Hwa" in out[0]["content"]
    assert out[1] == {"role": "user", "content": "Where was Hsiao Yun-Hwa born?"}
    assert out[2] == {"role": "assistant", "content": DEMO_REFUSAL}
    assert out[-1] == msgs[0]


def test_rewrite_merges_into_existing_system_prompt() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = rewrite_messages(msgs, [entry()], max_demos=0)
    assert len(out) == 2 and out[0]["content"].startswith("Be brief.") and "Hsiao Yun-Hwa" in out[0]["content"]
    assert rewrite_prompt("Tell me", [entry()]).endswith("Tell me")
    assert rewrite_prompt([1, 2, 3], [entry()]) == [1, 2, 3]


# policy -------------------------------------------------------------------------------------


def test_parse_policy() -> None:
    assert parse_policy({"default": "rewrite+suppress", "k1": "refuse", "k2": "pass"}) == {
        "default": ["rewrite", "suppress"],
        "k1": ["refuse"],
        "k2": [],
    }
    with pytest.raises(ValueError, match="unknown action"):
        parse_policy({"default": "explode"})
    with pytest.raises(ValueError, match="no assistant"):
        parse_policy({"default": "contrastive"})
    with pytest.raises(ValueError, match="cannot be combined"):
        parse_policy({"default": "refuse+suppress"})
