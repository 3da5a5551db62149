"""A local HF model folder as a system under evaluation: batched greedy generation with
``generate`` and teacher-forced scoring through :class:`obliviate.proxy.scoring.AnswerScorer`, with no
interventions (the folder's own distribution)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.evals.systems.base import ChatItem, Generation, ScoredAnswer, ScoreItem


class HFSystem:
    """``HFSystem(model_dir, name=None, batch_size=8)``: float32 on the CPU."""

    def __init__(self, model_dir: str | Path, name: str | None = None, batch_size: int = 8) -> None:
        from obliviate.proxy.scoring import AnswerScorer

        self.model_dir = Path(model_dir)
        self.name = name or self.model_dir.name
        self.batch_size = max(1, int(batch_size))
        self.scorer: Any = AnswerScorer.load(self.model_dir, batch_size=self.batch_size)

    def describe(self) -> dict[str, str]:
        return {
            "system": f"HF model folder {self.model_dir}",
            "generate": "transformers generate, greedy, batched with left padding; chat template with the "
            "generation prompt (plain prompts without it)",
            "score": "teacher-forced log-probabilities of the answer tokens (ending at the end-of-turn token) "
            "from one forward pass, float32; no interventions",
        }

    @property
    def can_score(self) -> bool:
        return True

    def generate(self, items: Sequence[ChatItem], *, max_tokens: int = 200) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(items), self.batch_size):
            out += self._generate_batch(items[start : start + self.batch_size], max_tokens)
        return out

    def _generate_batch(self, items: Sequence[ChatItem], max_tokens: int) -> list[Generation]:
        import torch

        model, tok = self.scorer.model, self.scorer.tokenizer
        prompts = [self.scorer.encode_prompt(messages=it.messages, prompt=it.prompt) for it in items]
        longest = max(len(p) for p in prompts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[b, longest - len(p) :] = torch.tensor(p)
            mask[b, longest - len(p) :] = 1
        eos = _eos_ids(tok, model)
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        results = []
        for row in gen[:, longest:].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            results.append(Generation(tok.decode(row[:cut], skip_special_tokens=True), completion_tokens=cut))
        return results

    def score(self, items: Sequence[ScoreItem], *, vocab_stats: bool = False) -> list[ScoredAnswer]:
        from obliviate.proxy.scoring import NONE

        jobs = []
        for it in items:
            if it.prompt is not None:
                prompt_ids, answer_ids = self.scorer.encode_completion(it.prompt, it.answer)
            else:
                prompt_ids, answer_ids = self.scorer.encode_chat(it.messages, it.answer)
            jobs.append((prompt_ids, answer_ids, NONE))
        return self.scorer.score_many(jobs, vocab_stats=vocab_stats)

    def close(self) -> None:
        self.scorer = None


def _eos_ids(tok: Any, model: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    return sorted({tok.eos_token_id, *configured} - {None})
