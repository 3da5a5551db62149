"""The guard policy: which actions a request gets when the prompt guard matches.

Configured per caller key id (``{"default": "rewrite+suppress", "<key id>": "refuse"}``) and checked at
start-up, including that the backend can execute every action named; an admin may force an action
(``obliviate.action``) or replace the policy (``obliviate.policy``) for one request.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from obliviate.guards.decisions import ACTIONS
from obliviate.guards.errors import BadRequest

NO_ASSISTANT = (
    "no assistant model is configured (start with --assistant-base/--assistant-unlearned, "
    "or --contrastive-mode uld --assistant)"
)


def parse_policy(policy: Mapping[str, str], *, contrastive_available: bool = False) -> dict[str, list[str]]:
    """``{"default": "rewrite+suppress", "<key id>": "refuse"}`` -> lists of actions. Fails at start-up."""
    parsed: dict[str, list[str]] = {}
    for scope, spec in policy.items():
        actions = [a.strip() for a in str(spec).split("+") if a.strip() and a.strip() != "pass"]
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"guard policy for {scope!r}: unknown action(s) {unknown}; choose from {ACTIONS}")
        if "refuse" in actions and len(actions) > 1:
            raise ValueError(f"guard policy for {scope!r}: 'refuse' cannot be combined with other actions")
        if "contrastive" in actions and not contrastive_available:
            raise ValueError(f"guard policy for {scope!r} uses 'contrastive' but {NO_ASSISTANT}")
        parsed[scope] = actions
    parsed.setdefault("default", ["rewrite", "suppress"])
    return parsed


class Policy:
    """``unexecutable``: the actions the backend named ``backend`` cannot execute."""

    def __init__(
        self,
        configured: Mapping[str, str],
        *,
        contrastive_available: bool,
        unexecutable: Set[str] = frozenset(),
        backend: str = "backend",
    ) -> None:
        self.scopes = parse_policy(configured, contrastive_available=contrastive_available)
        self.contrastive_available = contrastive_available
        self.unexecutable = frozenset(unexecutable)
        self.backend = backend
        for scope, actions in self.scopes.items():
            for action in actions:
                if action in self.unexecutable:
                    raise ValueError(
                        f"guard policy {scope!r} uses {action!r}, which backend {backend!r} cannot execute"
                    )

    def for_key(self, key_id: str) -> list[str]:
        return list(self.scopes.get(key_id, self.scopes["default"]))

    def for_request(self, options: Any, key_id: str) -> tuple[list[str] | None, list[str]]:
        """(the actions an admin forces whatever the match, or None; the actions when the guard matches).
        Raises a 400 for an invalid ``obliviate.policy`` or an action not available here."""
        if options is not None and options.action is not None:
            forced = [] if options.action == "pass" else [options.action]
            self._check_available(forced, "obliviate.action")
            return forced, forced
        if options is not None and options.policy is not None:
            try:
                actions = parse_policy({"obliviate.policy": options.policy}, contrastive_available=True)
            except ValueError as exc:
                raise BadRequest(str(exc), param="obliviate.policy", code="invalid_policy") from None
            when_matched = actions["obliviate.policy"]
            self._check_available(when_matched, "obliviate.policy")
            return None, when_matched
        return None, self.for_key(key_id)

    def _check_available(self, actions: list[str], param: str) -> None:
        if "contrastive" in actions and not self.contrastive_available:
            raise BadRequest(
                "contrastive decoding is not available: no assistant model is configured "
                "(start the proxy with --assistant-base/--assistant-unlearned)",
                param=param,
                code="contrastive_unavailable",
            )
        for action in actions:
            if action in self.unexecutable:
                raise BadRequest(
                    f"the '{action}' action is not available: backend {self.backend!r} cannot execute it",
                    param=param,
                    code="action_unavailable",
                )
