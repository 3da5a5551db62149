"""Assistant models for contrastive decoding: configuration, loading, per-sequence KV caches.

One :class:`ContrastiveDecoder` serves both backends: the vLLM plugin (``obliviate.guards.vllm_plugin``)
and the transformers backend. Each decoded sequence owns a :class:`SequenceState` holding one KV
cache per assistant; every step feeds only the tokens the assistants have not seen yet. Sequences
decoding together share one left-padded batched cache per assistant (a :class:`_Group`), kept from
step to step while the same sequences decode together and rebuilt when one joins or leaves.

The configuration travels to the vLLM engine process through the ``OBLIVIATE_ASSISTANT_*``
environment variables (the same names as the proxy's settings).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from obliviate.guards.fusion import offset_logits, uld_logits

logger = logging.getLogger(__name__)

Mode = Literal["offset", "uld"]
# Per-request argument names (vLLM ``SamplingParams.extra_args`` / request ``vllm_xargs``).
FLAG = "obliviate_contrastive"
ALPHA = "obliviate_alpha"


@dataclass(frozen=True)
class ContrastiveConfig:
    """offset: ``base`` and ``unlearned``; uld: ``assistant`` (a model that remembers the forget set)."""

    mode: Mode = "offset"
    alpha: float = 1.0
    base: Path | None = None
    unlearned: Path | None = None
    assistant: Path | None = None
    min_p: float | None = 0.1  # ULD plausibility mask on the main distribution
    top_p: float | None = None
    # float32: the fusion is exact (main = base gives the unlearned model's logits); bfloat16 halves
    # the assistants' memory traffic (about 2x faster decoding on CPU) at bf16 rounding of their logits.
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        if self.mode == "offset" and (self.base is None or self.unlearned is None or self.assistant is not None):
            raise ValueError(
                "contrastive mode 'offset' needs --assistant-base and --assistant-unlearned (and no --assistant)"
            )
        if self.mode == "uld" and (self.assistant is None or self.base is not None or self.unlearned is not None):
            raise ValueError("contrastive mode 'uld' needs --assistant only (the model that remembers the forget set)")
        if self.mode not in ("offset", "uld"):
            raise ValueError(f"unknown contrastive mode {self.mode!r}; choose offset or uld")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"unknown assistant dtype {self.dtype!r}; choose float32 or bfloat16")

    @property
    def paths(self) -> list[Path]:
        """Assistant folders in the order :meth:`ContrastiveDecoder.fuse` expects them."""
        return [self.base, self.unlearned] if self.mode == "offset" else [self.assistant]  # type: ignore[list-item]

    @classmethod
    def from_settings(cls, settings: Any) -> ContrastiveConfig | None:
        """None when no assistant is configured."""
        if not (settings.assistant_base or settings.assistant_unlearned or settings.assistant_path):
            return None
        return cls(
            mode=settings.assistant_mode,
            alpha=settings.assistant_alpha,
            base=settings.assistant_base,
            unlearned=settings.assistant_unlearned,
            assistant=settings.assistant_path,
            min_p=settings.assistant_min_p,
            top_p=settings.assistant_top_p,
            dtype=settings.assistant_dtype,
        )

    def to_env(self) -> dict[str, str]:
        """Every variable is set (empty for None), so a stale one in the proxy's environment never leaks through."""

        def text(value: Any) -> str:
            return "" if value is None else str(value) if isinstance(value, Path) else repr(value)

        return {
            "OBLIVIATE_ASSISTANT_MODE": self.mode,
            "OBLIVIATE_ASSISTANT_ALPHA": text(self.alpha),
            "OBLIVIATE_ASSISTANT_BASE": text(self.base),
            "OBLIVIATE_ASSISTANT_UNLEARNED": text(self.unlearned),
            "OBLIVIATE_ASSISTANT_PATH": text(self.assistant),
            "OBLIVIATE_ASSISTANT_MIN_P": text(self.min_p),
            "OBLIVIATE_ASSISTANT_TOP_P": text(self.top_p),
            "OBLIVIATE_ASSISTANT_DTYPE": self.dtype,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ContrastiveConfig | None:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            value = env.get(f"OBLIVIATE_ASSISTANT_{name}")
            return Path(value) if value else None

        def number(name: str, default: float | None) -> float | None:
            value = env.get(f"OBLIVIATE_ASSISTANT_{name}")
            return float(value) if value else default

        if not (path("BASE") or path("UNLEARNED") or path("PATH")):
            return None
        return cls(
            mode=env.get("OBLIVIATE_ASSISTANT_MODE", "offset"),  # type: ignore[arg-type]
            alpha=float(number("ALPHA", 1.0)),  # type: ignore[arg-type]
            base=path("BASE"),
            unlearned=path("UNLEARNED"),
            assistant=path("PATH"),
            min_p=number("MIN_P", None),
            top_p=number("TOP_P", None),
            dtype=env.get("OBLIVIATE_ASSISTANT_DTYPE") or "float32",  # type: ignore[arg-type]
        )


def check_compatible(main_path: Path, assistant_paths: Sequence[Path]) -> None:
    """Main and assistants must share tokenizer vocabulary and logits size, or fail at start-up."""
    from transformers import AutoConfig, AutoTokenizer

    main_vocab = AutoTokenizer.from_pretrained(main_path).get_vocab()
    main_size = AutoConfig.from_pretrained(main_path).vocab_size
    for path in assistant_paths:
        if not Path(path).is_dir():
            raise ValueError(f"assistant model folder {path} does not exist")
        vocab = AutoTokenizer.from_pretrained(path).get_vocab()
        size = AutoConfig.from_pretrained(path).vocab_size
        if vocab != main_vocab or size != main_size:
            diff = len(set(vocab.items()) ^ set(main_vocab.items()))
            raise ValueError(
                f"assistant model {path} does not share the main model's vocabulary "
                f"(vocab_size {size} vs {main_size}, {diff} differing token entries); "
                "contrastive decoding needs the same tokenizer"
            )


_serials = itertools.count()


@dataclass
class SequenceState:
    """One sequence's assistant KV caches and the tokens they have seen. While the sequence decodes
    in a batch its caches live in ``group`` (row ``row``) and ``caches`` is not used."""

    caches: list[Any]
    seen: list[int] = field(default_factory=list)
    last: list[Any] | None = None  # each assistant's logits after the last seen token
    serial: int = field(default_factory=lambda: next(_serials))
    group: _Group | None = None
    row: int = 0


@dataclass
class _Group:
    """Batched, left-padded caches (one per assistant) of sequences decoding together."""

    members: tuple[int, ...]  # the states' serials, in row order
    caches: list[Any]
    mask: Any  # [batch, cache length]: 1 where a row has a real token


class ContrastiveDecoder:
    """Loads the assistants (``config.dtype``, float32 by default) and fuses their logits into the main model's."""

    def __init__(self, config: ContrastiveConfig, device: Any = "cpu", vllm_kernels: bool = False) -> None:
        """``vllm_kernels``: inside the vLLM engine, run the assistants' linear layers through vLLM's
        oneDNN matmul on CPU in float32 (see ``obliviate.guards.assistant_speed``)."""
        import torch
        from transformers import AutoModelForCausalLM

        self.config = config
        self.device = torch.device(device)
        self.models = []
        self.linear_kernel = "torch"
        for path in config.paths:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, config.dtype)).to(self.device)
            model.eval()
            if self.device.type == "cpu" and config.dtype == "float32":  # measured faster only there
                from obliviate.guards.assistant_speed import onednn_linears, pretranspose_linears

                if vllm_kernels and onednn_linears(model):
                    self.linear_kernel = "onednn"
                else:
                    pretranspose_linears(model)
                    self.linear_kernel = "transposed"
            self.models.append(model)
        self.vocab_size = int(self.models[0].config.vocab_size)
        logger.info(
            "contrastive decoding (%s, alpha=%s, %s %s linears) with assistants %s",
            config.mode,
            config.alpha,
            config.dtype,
            self.linear_kernel,
            ", ".join(str(p) for p in config.paths),
        )

    def new_state(self) -> SequenceState:
        return SequenceState(caches=self._empty_caches())

    def _empty_caches(self) -> list[Any]:
        from obliviate.guards.assistant_speed import GrowingCache

        return [GrowingCache() for _ in self.models]

    def _sync(self, state: SequenceState, tokens: Sequence[int]) -> None:
        """Start over when the sequence no longer extends what the assistants saw (e.g. preemption)."""
        n = len(state.seen)
        if n and (len(tokens) < n or list(tokens[:n]) != state.seen):
            state.caches, state.seen, state.last, state.group = self._empty_caches(), [], None, None

    def _own_caches(self, state: SequenceState) -> list[Any]:
        """The sequence's caches on their own, cut out of its group's batched caches when it has one."""
        if state.group is None:
            return state.caches
        from obliviate.guards.assistant_speed import GrowingCache

        n = len(state.seen)
        own = []
        for batched in state.group.caches:
            cache = GrowingCache()
            for layer, entry in enumerate(batched.layers):
                length = entry.keys.shape[2]
                cache.update(
                    entry.keys[state.row : state.row + 1, :, length - n :],
                    entry.values[state.row : state.row + 1, :, length - n :],
                    layer,
                )
            own.append(cache)
        return own

    def _detach(self, state: SequenceState) -> None:
        if state.group is not None:
            state.caches = self._own_caches(state)
            state.group = None

    def advance(self, state: SequenceState, tokens: Sequence[int]) -> list[Any]:
        """Feed the tokens the assistants have not seen; return each assistant's next-token logits."""
        import torch

        self._sync(state, tokens)
        new = list(tokens[len(state.seen) :])
        if not new and state.last is not None:
            return state.last
        if not new:
            raise ValueError("contrastive decoding needs at least one token")
        self._detach(state)
        ids = torch.tensor([new], device=self.device)
        outs = []
        with torch.inference_mode():
            for i, model in enumerate(self.models):
                out = model(input_ids=ids, past_key_values=state.caches[i], use_cache=True, logits_to_keep=1)
                state.caches[i] = out.past_key_values
                outs.append(out.logits[0, -1].float())
        state.seen.extend(new)
        state.last = outs
        return outs

    def advance_many(self, states: Sequence[SequenceState], token_lists: Sequence[Sequence[int]]) -> list[list[Any]]:
        """:meth:`advance` for several sequences; those one token ahead of their cache (decode
        steps) run as one left-padded batch per assistant, the others (prefills) one by one."""
        results: list[list[Any] | None] = [None] * len(states)
        decode = []
        for j, (state, tokens) in enumerate(zip(states, token_lists)):
            self._sync(state, tokens)
            if state.seen and len(tokens) == len(state.seen) + 1:
                decode.append(j)
            else:
                results[j] = self.advance(state, tokens)
        decode.sort(key=lambda j: states[j].serial)  # a stable row order keeps a group reusable
        if len(decode) == 1:
            results[decode[0]] = self.advance(states[decode[0]], token_lists[decode[0]])
        elif decode:
            batch = self._decode_batch([states[j] for j in decode], [token_lists[j][-1] for j in decode])
            for j, outs in zip(decode, batch):
                results[j] = outs
        return results  # type: ignore[return-value]

    def _decode_batch(self, states: Sequence[SequenceState], new_tokens: Sequence[int]) -> list[list[Any]]:
        import torch

        lengths = [len(s.seen) for s in states]
        ids = torch.tensor([[t] for t in new_tokens], device=self.device)
        positions = torch.tensor([[n] for n in lengths], device=self.device)
        group = states[0].group
        members = tuple(s.serial for s in states)
        if group is None or group.members != members or any(s.group is not group for s in states):
            group = self._new_group(states, lengths)
        group.mask = torch.cat([group.mask, group.mask.new_ones((len(states), 1))], dim=1)
        per_model = []
        with torch.inference_mode():
            for i, model in enumerate(self.models):
                out = model(
                    input_ids=ids,
                    attention_mask=group.mask,
                    position_ids=positions,
                    past_key_values=group.caches[i],
                    use_cache=True,
                )
                group.caches[i] = out.past_key_values
                per_model.append(out.logits[:, -1].float())
        results = []
        for j, (state, token) in enumerate(zip(states, new_tokens)):
            state.group, state.row, state.caches = group, j, [None] * len(self.models)
            state.seen.append(int(token))
            state.last = [logits[j] for logits in per_model]
            results.append(state.last)
        return results

    def _new_group(self, states: Sequence[SequenceState], lengths: Sequence[int]) -> _Group:
        """Left-pad the sequences' caches into one batched cache per assistant."""
        import torch

        from obliviate.guards.assistant_speed import GrowingCache

        own = [self._own_caches(s) for s in states]
        longest = max(lengths)
        caches = []
        for i in range(len(self.models)):
            cache = GrowingCache()
            for layer in range(len(own[0][i].layers)):
                keys = [o[i].layers[layer].keys for o in own]
                values = [o[i].layers[layer].values for o in own]
                cache.update(_left_pad(keys, longest), _left_pad(values, longest), layer)
            caches.append(cache)
        mask = torch.zeros((len(states), longest), dtype=torch.long, device=self.device)
        for j, n in enumerate(lengths):
            mask[j, longest - n :] = 1
        return _Group(tuple(s.serial for s in states), caches, mask)

    def fuse(self, main: Any, assistants: Sequence[Any], alpha: float | None = None) -> Any:
        """Fuse one row of main logits with the assistants' logits (same vocabulary)."""
        a = self.config.alpha if alpha is None else float(alpha)
        assistants = [x.to(main.device, main.dtype) for x in assistants]
        if self.config.mode == "offset":
            return offset_logits(main, assistants[0], assistants[1], a)
        return uld_logits(main, assistants[0], a, min_p=self.config.min_p, top_p=self.config.top_p)

    def step(self, state: SequenceState, tokens: Sequence[int], main: Any, alpha: float | None = None) -> Any:
        """``(token_ids, logits) -> logits`` for one sequence: advance the assistants, then fuse."""
        return self.fuse(main, self.advance(state, tokens), alpha)


def _left_pad(tensors: Sequence[Any], length: int) -> Any:
    """``[1, heads, n_j, dim]`` tensors -> ``[batch, heads, length, dim]``, zeros on the left."""

    first = tensors[0]
    out = first.new_zeros((len(tensors), first.shape[1], length, first.shape[3]))
    for j, t in enumerate(tensors):
        out[j, :, length - t.shape[2] :] = t[0]
    return out


def request_alpha(args: Mapping[str, Any] | None) -> tuple[bool, float | None]:
    """(is this request routed to contrastive decoding, its alpha override) from ``vllm_xargs``."""
    if not args or not args.get(FLAG):
        return False, None
    alpha = args.get(ALPHA)
    return True, None if alpha is None else float(alpha)


class ContrastiveProcessor:
    """transformers-style adapter for one sequence: ``processor(output_ids, logits) -> logits``."""

    def __init__(self, decoder: ContrastiveDecoder, prompt_ids: Sequence[int], alpha: float | None = None) -> None:
        self.decoder = decoder
        self.prompt_ids = list(prompt_ids)
        self.alpha = alpha
        self.state = decoder.new_state()

    def __call__(self, output_ids: Sequence[int], logits: Any) -> Any:
        return self.decoder.step(self.state, self.prompt_ids + list(output_ids), logits, self.alpha)
