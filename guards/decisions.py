"""What the guards decide, and the per-request context that keeps every decision for audit."""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("refuse", "rewrite", "suppress", "contrastive")


@dataclass(frozen=True)
class Decision:
    verdict: str  # "pass" | "match" | "refuse" | "leak"
    guard: str
    score: float = 0.0
    matched_ids: tuple[str, ...] = ()
    entry_scores: tuple[tuple[str, float], ...] = ()  # a prompt match's score per matched entry


@dataclass(frozen=True)
class EntryView:
    """What the guards need of a forget-set entry. Sensitive: never logged, never sent to clients."""

    id: str
    aliases: tuple[str, ...]
    question: str | None
    answer: str | None
    text: str
    scope: tuple[str, ...] = ()  # client key ids it applies to; empty: everyone

    def applies_to(self, key_id: str) -> bool:
        return not self.scope or key_id in self.scope


@dataclass
class GuardContext:
    request_id: str
    key_id: str
    is_admin: bool
    kind: str
    texts: list[str] = field(default_factory=list)  # the conversation the model will read (see conversation_texts)
    decisions: list[Decision] = field(default_factory=list)
    matched: dict[str, float] = field(default_factory=dict)  # entry id -> best score
    entries: dict[str, EntryView] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    output_guard: str | None = None  # this request's output-guard mode (admin override), else the setting's

    def add(self, decision: Decision) -> None:
        """Keep ``decision`` (audit, metrics); a prompt match also raises its entries' best scores."""
        self.decisions.append(decision)
        for entry_id, score in decision.entry_scores:
            if score > self.matched.get(entry_id, float("-inf")):
                self.matched[entry_id] = score

    @property
    def action_label(self) -> str:
        return "+".join(self.actions) if self.actions else "pass"

    def matched_header(self) -> str:
        return ",".join(f"{i}:{s:.3f}" for i, s in sorted(self.matched.items(), key=lambda kv: -kv[1]))
