"""MSG, masked structural growth (Yao, Jin, Wang, Xu, Lin, Li; ICLR 2024), on the shared schedule.

    for each growth epoch E_t:
        widen every group to C_t: the new units' weights (their inputs and outputs) random at the model's
            own init (its fresh_std; the GPT: nanoGPT's), old weights, LayerNorm entries and eps kept
        multiply the channels born at t by r (growth/mask.py): at r = 0 the function is unchanged
    before every training step:  r = min(1, (progress - E_t) / ramp_epochs), progress in epochs;
                                 at r = 1 the mask is removed
    optimizer state: carried (MSG's transfer_states), zero for new entries

Departures from MSG's code (cofe-ai/MSG), where the shared protocol decides: every group grows at each
step of the shared schedule (MSG grows the hidden size, heads, MLP and depth at separate steps), and the
ramp is counted in epochs of the run (MSG: ``grow_time`` steps, 5,000 by default, of a BERT run) and must
end before the next growth, which the schedule puts at least one epoch later.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from growth.api import GrowthContext, GrowthStep, option
from growth.grower import ScheduledGrowth
from growth.mask import GrowthMask
from growth.surgery import LayerEdit, Rule, replica_plan


@dataclass(frozen=True)
class MSGOptions:
    ramp_epochs: float = option(0.5, "epochs over which the mask of a stage's new units rises from 0 to 1 "
                                     "(growths are at least one epoch apart)", low=0, high=1, low_open=True)


class MaskedRule(Rule):
    """k fresh channels per group, every new weight random at the model's init; exact only behind the mask."""
    masked = True

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.std = None

    def prepare(self, model) -> None:
        self.std = getattr(model, "fresh_std", None)

    def _std(self, path: str, fan_in: int) -> float:
        std = self.std(path, fan_in) if self.std is not None else None
        return std if std is not None else (2.0 / fan_in) ** 0.5  # Kaiming fan-in: the CNNs' init

    def plan(self, group, old, new):
        return replica_plan(old, torch.empty(0, dtype=torch.long), n_fresh=new - old)

    def fresh(self, layer: LayerEdit, part, shape):
        return torch.randn(shape, generator=self.generator) * self._std(layer.path, layer.fan_in(new=True))

    def fresh_embedding(self, path, shape):
        return torch.randn(shape, generator=self.generator) * self._std(path, 1)


class MSG(ScheduledGrowth):
    """MSG: new units with random weights behind a mask ramped from 0 to 1 (function-preserving)."""
    Options = MSGOptions
    supports_images = False  # the mask sits on channels-last activations; a BN after a masked conv undoes it

    def __init__(self, setup):
        super().__init__(setup)
        self.mask: GrowthMask | None = None

    def rule(self, ctx: GrowthContext, step: GrowthStep) -> Rule:
        return MaskedRule(ctx.generator)

    def ramp(self, stage: int, progress: float) -> float:
        return min(1.0, max(0.0, (progress - self.schedule.growth_epochs[stage - 1]) / self.options.ramp_epochs))

    def before_epoch(self, ctx: GrowthContext):
        # a ramp is at most one epoch and growths are at least one apart, so every ramp is over when the next
        # epoch starts: checkpoints (at epoch ends) never need a mask back, and a resumed run starts without one
        self.before_step(ctx.model, float(ctx.epoch))
        return super().before_epoch(ctx)

    def after_growth(self, ctx: GrowthContext, step: GrowthStep) -> None:
        self.mask = GrowthMask(ctx.model, step.stage, 0.0)
        step.info["mask_ramp_epochs"] = self.options.ramp_epochs

    def before_step(self, model, progress: float) -> None:
        if self.mask is None:
            return
        r = self.ramp(self.mask.stage, progress)
        if r >= 1.0:
            self.mask.remove()
            self.mask = None
        else:
            self.mask.set(r)
