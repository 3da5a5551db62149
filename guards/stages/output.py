"""The output guard stage: which monitor (if any) checks this request's generated text."""

from __future__ import annotations

from dataclasses import replace

from obliviate.guards.decisions import GuardContext
from obliviate.guards.forget_view import ForgetView
from obliviate.guards.output_guard import OutputCheckConfig, OutputMonitor
from obliviate.guards.stages.base import Stage


class OutputGuard(Stage):
    """``mode``: "all" (every response), "matched" (matched requests only) or "off"; a request's
    admin override (``ctx.output_guard``) wins. Unmatched responses are checked for aliases only."""

    name = "output"

    def __init__(self, view: ForgetView, mode: str, config: OutputCheckConfig) -> None:
        self.view = view
        self.mode = mode
        self.config = config

    def inspect_output(self, ctx: GuardContext) -> OutputMonitor | None:
        mode = ctx.output_guard or self.mode
        if mode == "off" or (mode == "matched" and not ctx.matched):
            return None
        # Even with nothing to look for yet: the monitor reads the forget set's live version, so an
        # entry added while a stream is open is checked on the rest of it (no hold-back until then).
        return OutputMonitor(self.view, ctx, replace(self.config, full=bool(ctx.matched)))
