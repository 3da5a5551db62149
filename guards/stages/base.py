"""The stage interface. A guard or an action implements only the stages it needs; the defaults do
nothing. ``GuardPipeline`` runs them in its configured order:

- ``inspect_prompt(ctx) -> Decision | None``: does the request touch the forget set (a ``match``),
  or must it be answered without the model (a ``refuse``)? The pipeline keeps every decision on ``ctx``.
- ``transform_request(body, ctx) -> body``: rewrite what the model sees (in-context unlearning).
- ``logits_spec(ctx) -> Spec | None``: data for the backend to execute (``obliviate.guards.specs``).
- ``inspect_output(ctx) -> OutputMonitor | None``: the monitor that checks the generated text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from obliviate.guards.decisions import Decision, GuardContext
    from obliviate.guards.output_guard import OutputMonitor
    from obliviate.guards.specs import Spec


class Stage:
    name: ClassVar[str] = "stage"
    executes: ClassVar[str | None] = None  # the spec kind a backend must execute for this stage

    def inspect_prompt(self, ctx: GuardContext) -> Decision | None:
        return None

    def transform_request(self, body: dict[str, Any], ctx: GuardContext) -> dict[str, Any]:
        return body

    def logits_spec(self, ctx: GuardContext) -> Spec | None:
        return None

    def inspect_output(self, ctx: GuardContext) -> OutputMonitor | None:
        return None
