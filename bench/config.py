"""Run specification: one frozen, typed RunSpec per run, built from a YAML preset plus overrides.

Every hyperparameter lives here, with its unit, in one commented place. Validation happens before
any compute: an unknown key, a bad enum value or an out-of-range number raises ``ConfigError``
with one line naming the field and what it accepts (the CLI turns that into exit status 2).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
SUITES_FILE = Path(__file__).with_name("suites.yaml")
SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field."""


@dataclass(frozen=True)
class GrowthSpec:
    """How a growing method changes width over training (paper.md 6-7, growth/schedule.py)."""
    start_fraction: float = 0.25  # width of the first stage as a fraction of the target widths
    schedule: str = "exp"  # exp (stages lengthen by p_t) | fixed (a growth every t0 epochs) | list
    p_c: float = 0.2  # each stage adds round_to_even(p_c * current width) channels
    p_t: float = 0.2  # exp: stage t lasts T_(t-1) + round(p_t * T_(t-1)) epochs
    t0: int = 5  # epochs of the first stage (paper.md 6: 5 for CIFAR-10 at 100 epochs)
    width_rule: str = "global"  # global (the widest layer's ratio sequence for all) | per_layer
    growth_epochs: tuple[int, ...] = ()  # schedule=list: the epochs (0-based) before which to grow
    stages: int = 0  # growth steps; 0 = as many as p_c needs to reach full width
    # variance transfer (growth/vt.py)
    vt_exponent: float = 0.5  # rescale s = (C_t / C_t+1)^e; init variance g^2/F (0.5) or 1/F^2 (1.0)
    vt_mode: str = "fanin"  # fanin | constraint_old | constraint_new (rescale from measured variance)
    rescale_classifier: bool = False  # rescale the classifier's old columns too (not function-preserving)
    rescale_unnormalized: bool = False  # rescale layers with no BN after them (not function-preserving)
    # learning-rate adaptation (growth/lra.py)
    lra_norm: str = "total"  # total: ||W_dt||_F / ||W_0||_F | rms: per-entry RMS ratio
    lra_every: str = "epoch"  # recompute the multipliers every epoch | every step
    # Net2Net (baselines/net2net.py)
    net2net_noise: float = 0.01  # noise std on replicas' fan-in, relative to the layer's old weights' std
    # gradient growers (baselines/; baselines.md 2-4). Budgets are in epochs of the current model
    # (steps of the run's batch size) so that they scale with the schedule
    gradmax_samples: int = 128  # images in GradMax's one growth batch
    gradmax_scale: str = "mean_norm"  # new fan-out norm: 0.5 x mean fan-out norm of old units | fixed: 0.5
    firefly_epochs: float = 0.25  # candidate optimisation (the original: 1 epoch per round)
    firefly_score_epochs: float = 0.25  # gate-score pass (the original: 1 epoch)
    firefly_eps: float = 0.1  # step applied to the chosen candidates: split offset and new fan-out x eps
    firefly_bn_batches: int = 50  # BN statistics re-estimated after growth (new units start at 0/1)
    firefly_simple_steps: int = 100  # Adam steps on the new weights only, one batch of gradmax_samples
    firefly_simple_lr: float = 1e-3
    split_variant: str = "fast"  # fast (Rayleigh-quotient descent) | exact (eigen-solve; small layers only)
    split_epochs: float = 1.0  # Rayleigh-quotient descent of the split directions (published: 10)
    split_score_batches: int = 100  # batches averaging the eigenvalue estimates (published: 1 epoch)
    split_eps: float = 1e-2  # split offset: children theta +- eps * v_min
    # optimizer state at growth: method = each method's original policy (VT, Net2Net, GradMax and
    # firefly_simple carry; Firefly and splitting reset), or force carry | reset for all
    optimizer: str = "method"  # method | carry (old slice copied, new zero) | reset
    # batch-size adaptation (growth/batch.py)
    batch_adapt: bool = False  # B_t = B * 2^floor(log2(MACs_full / MACs_t)), capped
    batch_max_factor: int = 8  # cap on B_t / B
    batch_lr_scaling: bool = False  # scale the LR with B_t / B (the paper does not)


@dataclass(frozen=True)
class RunSpec:
    # what runs
    method: str = "large"  # a registered method (python -m bench list)
    arch: str = "resnet20"  # a registered architecture
    dataset: str = "cifar10"  # cifar10 | cifar100 | imagenet
    width_mult: float = 1.0  # target width as a multiple of the standard network's
    # data
    data_dir: str = "data"  # where the dataset lies (torchvision CIFAR, the JPEG copy, or ImageNet folders)
    download: bool = False  # fetch torchvision's CIFAR into data_dir if absent (needs internet)
    train_subset: int = 0  # images, class-balanced; 0 = the whole training split
    test_subset: int = 0  # images, class-balanced; 0 = the whole test split
    subset_seed: int = 0  # which balanced subset; shared by every run so methods see the same images
    # optimisation
    epochs: int = 15
    batch_size: int = 128  # images per training step
    eval_batch_size: int = 500  # images per evaluation step (no effect on results)
    lr: float = 0.1  # peak learning rate, per image-averaged loss
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4  # L2, coupled (added to the gradient)
    lr_schedule: str = "cosine"  # cosine (to 0 at the end) | step (x lr_decay at lr_decay_epochs)
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    lr_decay: float = 0.1  # step schedule: factor applied at each milestone
    lr_decay_epochs: tuple[int, ...] = ()  # step schedule: milestones in epochs
    label_smoothing: float = 0.0
    seed: int = 0  # model init, data order and augmentation
    # execution mode (recorded with every result; never mix modes in one table)
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    # auto: resolved for the hardware when the spec is made (bench/hardware.py says how and why);
    # the resolved value is what the config hash covers and what the run records
    precision: str = "auto"  # auto (bf16 where the device computes it natively, else fp32) | fp32 | bf16 (autocast)
    channels_last: bool | str = "auto"  # auto | true | false
    # use channels_last only while every channel width is a multiple of this (0: always). On a Xeon
    # with AMX, bf16 channels_last kernels are fast at multiples of 16 and up to 3x slower than NCHW in
    # between (ResNet-20 stage widths 12/24/48: 119 ms vs 64 ms a step); elsewhere 0 is fastest
    channels_last_align: int | str = "auto"
    compile: bool = False  # torch.compile; recompiles at each new width
    deterministic: bool = False  # deterministic algorithms: bit-exact resume on the CPU
    threads: int = 0  # torch CPU threads; 0 = OMP_NUM_THREADS if set, else the cores this process may use
    # output
    out_dir: str = "results"
    checkpoint: bool = True  # save checkpoint.pt at every epoch end (resume after a crash)
    growth: GrowthSpec = field(default_factory=GrowthSpec)
    # set by resolution, not a flag: the fields above that were asked as "auto"
    auto_resolved: tuple[str, ...] = ()


CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("cifar10", "cifar100", "imagenet"),
    "lr_schedule": ("cosine", "step"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),
    "growth.schedule": ("exp", "fixed", "list"),
    "growth.width_rule": ("global", "per_layer"),
    "growth.vt_exponent": (0.5, 1.0),
    "growth.vt_mode": ("fanin", "constraint_old", "constraint_new"),
    "growth.lra_norm": ("total", "rms"),
    "growth.lra_every": ("epoch", "step"),
    "growth.optimizer": ("method", "carry", "reset"),
    "growth.gradmax_scale": ("mean_norm", "fixed"),
    "growth.split_variant": ("fast", "exact"),
}
# field -> (lowest, highest, lowest inclusive); None = unbounded
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "width_mult": (0, 64, False), "train_subset": (0, None, True), "test_subset": (0, None, True),
    "epochs": (1, None, True), "batch_size": (1, None, True), "eval_batch_size": (1, None, True),
    "lr": (0, None, False), "momentum": (0, 1, True), "weight_decay": (0, None, True),
    "warmup_epochs": (0, None, True), "lr_decay": (0, 1, False), "label_smoothing": (0, 1, True),
    "threads": (0, None, True), "channels_last_align": (0, None, True), "seed": (0, None, True), "subset_seed": (0, None, True),
    "growth.start_fraction": (0, 1, False), "growth.p_c": (0, None, False), "growth.p_t": (0, None, True),
    "growth.t0": (1, None, True), "growth.stages": (0, None, True), "growth.growth_epochs": (1, None, True),
    "growth.batch_max_factor": (1, None, True), "growth.net2net_noise": (0, None, True),
    "growth.gradmax_samples": (1, None, True), "growth.firefly_epochs": (0, None, False),
    "growth.firefly_score_epochs": (0, None, False), "growth.firefly_bn_batches": (0, None, True), "growth.firefly_eps": (0, None, False),
    "growth.firefly_simple_steps": (0, None, True), "growth.firefly_simple_lr": (0, None, False),
    "growth.split_epochs": (0, None, False), "growth.split_score_batches": (1, None, True),
    "growth.split_eps": (0, None, False),
}
# fields that do not change what a run computes: left out of the config hash
UNHASHED = ("data_dir", "download", "out_dir", "eval_batch_size", "checkpoint", "threads", "auto_resolved")
# fields that accept "auto" beside their type: resolved for the hardware by bench.hardware.resolve
AUTO_FIELDS = ("precision", "channels_last", "channels_last_align")
# fields that are not flags or preset keys
INTERNAL = ("auto_resolved",)


class _NotFinite(Exception):
    pass


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise a one-line ConfigError."""
    if name in AUTO_FIELDS:
        if value == "auto":
            return value
        hint = next((a for a in typing.get_args(hint) if a is not str), hint)  # bool | str -> bool
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            if not math.isfinite(float(value)):
                raise _NotFinite
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if origin is tuple:
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return tuple(_coerce(name, v, item) for v in value)
    except _NotFinite:
        raise ConfigError(f"{name}: {value!r} is not a finite number") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    raise ConfigError(f"{name}: unsupported field type {hint}")


def _check(name: str, value: Any) -> None:
    if name in AUTO_FIELDS and value == "auto":
        return
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{name}: {value!r} not accepted; accepted values: {', '.join(map(str, CHOICES[name]))}")
    if name in RANGES:
        lo, hi, lo_inclusive = RANGES[name]
        vals = value if isinstance(value, tuple) else (value,)
        for v in vals:
            if lo is not None and (v < lo or (v == lo and not lo_inclusive)):
                raise ConfigError(f"{name}: {v} out of range; must be {'>=' if lo_inclusive else '>'} {lo}"
                                  + (f" and <= {hi}" if hi is not None else ""))
            if hi is not None and v > hi:
                raise ConfigError(f"{name}: {v} out of range; must be <= {hi}")


def _build(cls, values: dict[str, Any], prefix: str = "", internal: bool = False):
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = prefix + key
        if key not in names or (full in INTERNAL and not internal):
            accepted = [prefix + n for n in names if prefix + n not in INTERNAL]
            raise ConfigError(f"unknown field {full!r}; accepted fields: {', '.join(accepted)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping of {hints[key].__name__} fields")
            kwargs[key] = _build(hints[key], value, full + ".", internal)
            continue
        kwargs[key] = _coerce(full, value, hints[key])
        _check(full, kwargs[key])
    return cls(**kwargs)


def load_presets() -> dict[str, dict]:
    with open(PRESETS_FILE) as f:
        return yaml.safe_load(f)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'growth.p_c': 0.2} -> {'growth': {'p_c': 0.2}}; nested dicts pass through."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            out.setdefault(head, {})
            if not isinstance(out[head], dict):
                raise ConfigError(f"{head}: expected a mapping")
            out[head].update(_nest({rest: value}))
        elif isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_spec(preset: str | None = None, **overrides: Any) -> RunSpec:
    """Resolve a RunSpec: dataclass defaults <- preset <- preset's per-dataset block <- its per-arch
    block <- overrides.

    Overrides may use dotted names for nested sections (``**{"growth.p_c": 0.3}``)."""
    from bench import methods  # the method must be registered; imported late to avoid a cycle
    from bench.models import ARCHS

    values: dict[str, Any] = {}
    over = _nest(overrides)
    if preset is not None:
        presets = load_presets()
        if preset not in presets:
            raise ConfigError(f"preset: {preset!r} not accepted; accepted values: {', '.join(presets)}")
        p = dict(presets[preset])
        per_dataset = p.pop("datasets", {}) or {}
        per_arch = p.pop("archs", {}) or {}
        values = _merge(values, p)
        dataset = over.get("dataset", values.get("dataset", RunSpec.dataset))
        values = _merge(values, per_dataset.get(dataset, {}))
        # an architecture's training recipe (LR, warm-up), shared by every method that trains it
        arch = over.get("arch", values.get("arch", RunSpec.arch))
        values = _merge(values, per_arch.get(arch, {}))
    values = _merge(values, over)
    spec = _build(RunSpec, values)
    from bench.hardware import resolve, resolve_device
    resolve_device(spec)  # --device cuda without CUDA: refused here, before anything runs
    spec = resolve(spec)
    if spec.arch not in ARCHS:
        raise ConfigError(f"arch: {spec.arch!r} not accepted; accepted values: {', '.join(ARCHS)}")
    from bench.models import base_widths
    narrowest = min(base_widths(spec.arch).values())
    if round(narrowest * spec.width_mult) < 1:
        raise ConfigError(f"width_mult: {spec.width_mult} leaves {spec.arch}'s narrowest layer ({narrowest} channels) "
                          f"with none; must be >= {0.5 / narrowest:.3g}")
    if spec.method not in methods.METHODS:
        raise ConfigError(f"method: {spec.method!r} not accepted; accepted values: {', '.join(methods.METHODS)}")
    if spec.lr_schedule == "step" and any(e > spec.epochs for e in spec.lr_decay_epochs):
        raise ConfigError(f"lr_decay_epochs: {spec.lr_decay_epochs} must lie within 1..epochs ({spec.epochs})")
    if spec.method not in ("large", "small") or spec.growth.schedule == "list":
        from growth.schedule import ScheduleError, make_schedule
        try:
            make_schedule(spec)
        except ScheduleError as e:
            raise ConfigError(str(e)) from None
    if spec.warmup_epochs >= spec.epochs:
        raise ConfigError(f"warmup_epochs: {spec.warmup_epochs} must be < epochs ({spec.epochs})")
    return spec


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    """A stored config (config.json) back into its RunSpec, resolved fields included."""
    return _build(RunSpec, d, internal=True)


def _changed(d: dict, default: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _changed(v, default.get(k, {}))
            if sub:
                out[k] = sub
        elif k not in default or v != default[k]:
            out[k] = v
    return out


def config_hash(spec: RunSpec) -> str:
    """sha256 of the canonical JSON of the fields that change what the run computes, where they
    differ from RunSpec's defaults: adding a new option (with a default) keeps existing runs' ids.
    "auto" fields are hashed as resolved on this machine: one config run on two kinds of hardware
    (bf16 on one, fp32 on the other) gives two ids, never one."""
    from bench.hardware import resolve

    d = _changed(spec_to_dict(resolve(spec)), spec_to_dict(RunSpec()))
    for k in UNHASHED:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def flat_config(spec: RunSpec) -> dict[str, Any]:
    """The hashed fields of ``spec`` as {dotted name: value}: what makes two runs different."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, prefix + k + ".") if isinstance(v, dict) else {prefix + k: v})
        return out
    return {k: v for k, v in flat(spec_to_dict(spec)).items() if k not in UNHASHED}


def run_id(spec: RunSpec) -> str:
    return f"{spec.method}-{spec.arch}-{spec.dataset}-s{spec.seed}-{config_hash(spec)[:10]}"


def field_names(cls=RunSpec, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, type hint) for every leaf field, for the CLI's flags."""
    out = []
    for name, hint in _hints(cls).items():
        if prefix + name in INTERNAL:
            continue
        if dataclasses.is_dataclass(hint):
            out += field_names(hint, prefix + name + ".")
        else:
            out.append((prefix + name, hint))
    return out


def load_suites() -> dict[str, dict]:
    with open(SUITES_FILE) as f:
        return yaml.safe_load(f)


def suite_specs(name: str, preset: str | None, **overrides: Any) -> list[RunSpec]:
    """The runs of a named suite: each entry's fields over the preset, the CLI's overrides last."""
    suites = load_suites()
    if name not in suites:
        raise ConfigError(f"suite: {name!r} not accepted; accepted values: {', '.join(suites)}")
    suite = suites[name]
    preset = preset or suite.get("preset")
    seeds = suite.get("seeds", [0])
    specs = []
    for run in suite["runs"]:
        for seed in run.get("seeds", seeds):
            entry = {k: v for k, v in run.items() if k != "seeds"}
            specs.append(make_spec(preset, **_merge(_nest({**suite.get("common", {}), **entry, "seed": seed}),
                                                    _nest(overrides))))
    return specs
