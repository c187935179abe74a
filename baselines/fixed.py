"""Fixed-size references: the target network trained from scratch, and the start-width network."""
from __future__ import annotations

from bench.methods import Method, register
from bench.models import scaled_widths


@register("large")
class Large(Method):
    """The target (full-width) network, trained at fixed size for the whole run."""


@register("small")
class Small(Method):
    """The network at the growth schedule's start width (``growth.start_fraction``), at fixed size."""

    def start_widths(self) -> dict[str, int]:
        return scaled_widths(self.spec.arch, self.spec.width_mult * self.spec.growth.start_fraction)
