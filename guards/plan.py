"""What the guard pipeline decided for one request: a :class:`Plan` for the service to execute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from obliviate.guards.decisions import GuardContext
from obliviate.guards.output_guard import OutputCheck
from obliviate.guards.specs import Spec


@dataclass
class Plan:
    """Either a refusal (the model is not called), or the upstream body as the guards transformed it
    plus the specs the backend executes; ``output`` is the only way a response leaves the proxy (the
    allow-list for client keys, the output guard), refusals included; its default shows a client
    key's view. ``ctx`` keeps every decision (audit, metrics, the ``x-obliviate-*`` headers)."""

    ctx: GuardContext
    body: dict[str, Any]
    specs: tuple[Spec, ...] = ()
    refusal: str | None = None  # the refusal's text; the proxy builds the response
    output: OutputCheck = field(default_factory=OutputCheck)
