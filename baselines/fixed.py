"""Fixed-size references: the target network trained from scratch, and the start-width network."""
from __future__ import annotations

from bench.methods import Method, register
from growth.schedule import stage_widths


@register("large")
class Large(Method):
    """The target (full-width) network, trained at fixed size for the whole run."""


@register("small")
class Small(Method):
    """The network at the growth schedule's start widths (stage 0), trained at fixed size."""

    def start_widths(self) -> dict[str, int]:
        gs = self.spec.growth
        return stage_widths(self.target_widths(), gs.start_fraction, gs.p_c, gs.width_rule)[0]
