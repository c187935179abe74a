"""The paper's method as a plug-in of the shared loop (Yuan, Savarese, Maire, NeurIPS 2023;
docs/method.md).

    widths C_0 = C/4 ... C_N = C, growth epochs E_1 < ... < E_N      (growth/schedule.py)
    for each epoch e:
        if e == E_t:  widen every group to C_t with paired new units [V; V] / [Z, -Z]   (vt.py)
                      rescale old blocks by (C_t-1 / C_t)^(1/2), BN statistics to match  [+vrs]
        eta_t = eta_0 * ||W_dt||_F / ||W_0||_F for weights born at stage t              [+lra]
        batch B_t = B * 2^floor(log2(MACs_full / MACs_t))                    [growth.batch_adapt]

The ablation rows of the paper are separate method names (bench/methods.py): ``growing`` (pairing
only), ``growing+vrs``, ``growing+lra`` and ``full`` (both).
"""
from __future__ import annotations

from dataclasses import dataclass

from growth.api import GrowthContext, GrowthStep, Multipliers, option
from growth.grower import ScheduledGrowth
from growth.lra import NORMS, lra_multipliers
from growth.surgery import Rule
from growth.vt import MODES, VarianceTransfer


@dataclass(frozen=True)
class VTOptions:
    # config.json before methods declared their own options: old name in growth -> option
    LEGACY = {k: k for k in ("vt_exponent", "vt_mode", "rescale_classifier", "rescale_unnormalized", "lra_norm",
                                "lra_every")}
    vt_exponent: float = option(0.5, "rescale s = (C_t / C_t+1)^e; init variance g^2/F (0.5) or 1/F^2 (1.0)",
                                choices=(0.5, 1.0))
    vt_mode: str = option("fanin", "fanin | constraint_old | constraint_new (rescale from measured variance)",
                          choices=MODES)
    rescale_classifier: bool = option(False, "rescale the classifier's old columns too (not function-preserving)")
    rescale_unnormalized: bool = option(False, "rescale layers with no BN after them (not function-preserving)")
    lra_norm: str = option("total", "total: ||W_dt||_F / ||W_0||_F | rms: per-entry RMS ratio", choices=NORMS)
    lra_every: str = option("epoch", "recompute the LRA multipliers every epoch | every step",
                            choices=("epoch", "step"))


class VTGrowth(ScheduledGrowth):
    """Variance transfer on the shared schedule; RESCALE and LRA select the ablation row."""

    Options = VTOptions
    RESCALE = True  # variance rescaling (VRS)
    LRA = True  # learning-rate adaptation

    def __init__(self, setup):
        super().__init__(setup)
        self.multipliers_every_step = self.LRA and self.options.lra_every == "step"

    def rule(self, ctx: GrowthContext, step: GrowthStep) -> Rule:
        o = self.options
        return VarianceTransfer(ctx.generator, rescale=self.RESCALE, exponent=o.vt_exponent, mode=o.vt_mode,
                                rescale_classifier=o.rescale_classifier, rescale_unnormalized=o.rescale_unnormalized)

    def lr_multipliers(self, model, epoch):
        scaled = super().lr_multipliers(model, epoch) or {}
        if not self.LRA:
            return scaled or None
        mults, ratios = lra_multipliers(model, self.options.lra_norm)
        by_param = {**scaled, **{k: v * scaled.get(k, 1.0) for k, v in mults.items()}}
        return Multipliers(by_param, {"lra": {str(t): r for t, r in ratios.items()}})


class Growing(VTGrowth):
    """Ablation: paired new units only (no variance rescaling, no LR adaptation)."""
    role = "ablation"
    RESCALE, LRA = False, False


class GrowingVRS(VTGrowth):
    """Ablation: paired new units with variance rescaling."""
    role = "ablation"
    RESCALE, LRA = True, False


class GrowingLRA(VTGrowth):
    """Ablation: paired new units with learning-rate adaptation."""
    role = "ablation"
    RESCALE, LRA = False, True
    uses_lra = True


class Full(VTGrowth):
    """The paper's method: variance transfer (pairing + rescaling) and learning-rate adaptation."""
    RESCALE, LRA = True, True
    uses_lra = True
    role = "paper"
