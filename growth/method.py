"""The paper's method as a plug-in of the shared loop (Yuan, Savarese, Maire, NeurIPS 2023).

    widths C_0 = C/4 ... C_N = C, growth epochs E_1 < ... < E_N      (growth/schedule.py)
    for each epoch e:
        if e == E_t:  widen every group to C_t with paired new units [V; V] / [Z, -Z]   (vt.py)
                      rescale old blocks by (C_t-1 / C_t)^(1/2), BN statistics to match  [+vrs]
        eta_t = eta_0 * ||W_dt||_F / ||W_0||_F for weights born at stage t              [+lra]
        batch B_t = B * 2^floor(log2(MACs_full / MACs_t))                    [growth.batch_adapt]

The ablation rows of the paper are registered as separate method names: ``growing`` (pairing
only), ``growing+vrs``, ``growing+lra`` and ``full`` (both).
"""
from __future__ import annotations

from bench.methods import GrowthContext, GrowthEvent, Method, register
from growth.lra import lra_multipliers
from growth.schedule import batch_schedule, make_schedule
from growth.surgery import Rule, grow_model
from growth.vt import VarianceTransfer


class ScheduledGrowth(Method):
    """Grows on the shared schedule (same widths and epochs for every grower); subclasses give the rule.

    A growth step: ``rule(ctx)`` (which may measure a growth signal and add its cost to
    ``self.extra_flops``), the surgery, then ``after_growth(ctx)`` (candidate training, BN
    re-estimation). ``prepare(model)`` runs before every epoch, so what it sets survives a resume."""

    ORIGINAL_OPTIMIZER = "carry"  # the optimizer-state policy of the method's original code

    def __init__(self, spec):
        super().__init__(spec)
        self.schedule = make_schedule(spec)
        self.batches = batch_schedule(spec, self.schedule)
        self.epoch = 0
        self.extra_flops = 0  # growth work the FLOP counter does not see, this growth step
        self.target: dict[str, int] = {}  # widths the current growth step grows to
        self.info: dict = {}  # what this growth step reports in the history row

    def start_widths(self) -> dict[str, int]:
        return dict(self.schedule.widths[0])

    def rule(self, ctx: GrowthContext) -> Rule:
        raise NotImplementedError

    def prepare(self, model) -> None:
        pass

    def after_growth(self, ctx: GrowthContext) -> None:
        pass

    def optimizer_policy(self) -> str:
        policy = self.spec.growth.optimizer
        return self.ORIGINAL_OPTIMIZER if policy == "method" else policy

    def before_epoch(self, ctx: GrowthContext) -> GrowthEvent | None:
        self.epoch = ctx.epoch
        self.prepare(ctx.model)
        if ctx.epoch not in self.schedule.growth_epochs:
            return None
        stage = self.schedule.stage_at(ctx.epoch)
        self.target, self.extra_flops, self.info = dict(self.schedule.widths[stage]), 0, {}
        grow_model(ctx.model, self.target, self.rule(ctx), stage)
        self.after_growth(ctx)
        policy = self.optimizer_policy()
        return GrowthEvent(extra_flops=self.extra_flops, optimizer_policy=policy,
                           info={"stage": stage, "optimizer": policy, "extra_flops": self.extra_flops, **self.info})

    def batch_size(self, epoch: int) -> int:
        return self.batches[epoch]

    def lr_multipliers(self, model):
        factor = self.batches[self.epoch] / self.spec.batch_size
        if self.spec.growth.batch_lr_scaling and factor != 1:  # linear scaling rule, an option
            return {name: factor for name, _ in model.named_parameters()}
        return None


class VTGrowth(ScheduledGrowth):
    RESCALE = True  # variance rescaling (VRS)
    LRA = True  # learning-rate adaptation

    def __init__(self, spec):
        super().__init__(spec)
        self.multipliers_every_step = self.LRA and spec.growth.lra_every == "step"
        self.ratios: dict[int, float] = {}

    def rule(self, ctx: GrowthContext) -> Rule:
        gs = self.spec.growth
        return VarianceTransfer(ctx.generator, rescale=self.RESCALE, exponent=gs.vt_exponent, mode=gs.vt_mode,
                                rescale_classifier=gs.rescale_classifier, rescale_unnormalized=gs.rescale_unnormalized)

    def lr_multipliers(self, model):
        scaled = super().lr_multipliers(model) or {}
        if not self.LRA:
            return scaled or None
        mults, self.ratios = lra_multipliers(model, self.spec.growth.lra_norm)
        return {**scaled, **{k: v * scaled.get(k, 1.0) for k, v in mults.items()}} or None

    def log(self) -> dict:
        return {"lra": {str(t): r for t, r in self.ratios.items()}} if self.LRA else {}


@register("growing")
class Growing(VTGrowth):
    RESCALE, LRA = False, False


@register("growing+vrs")
class GrowingVRS(VTGrowth):
    RESCALE, LRA = True, False


@register("growing+lra")
class GrowingLRA(VTGrowth):
    RESCALE, LRA = False, True


@register("full")
class Full(VTGrowth):
    RESCALE, LRA = True, True
