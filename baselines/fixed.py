"""Fixed-size references: the target network trained from scratch, and the start-width network."""
from __future__ import annotations

from growth.api import Method
from growth.schedule import stage_widths


class Large(Method):
    """The target (full-width) network, trained at fixed size for the whole run."""
    role = "target"


class Small(Method):
    """The network at the growth schedule's start widths (stage 0), trained at fixed size."""
    growth_fields = ("start_fraction", "width_rule", "width_align")  # stage 0's widths depend on these alone

    def start_widths(self) -> dict[str, int]:
        gs = self.setup.schedule
        return stage_widths(self.target_widths(), gs.start_fraction, gs.p_c, gs.width_rule, align=gs.width_align)[0]
