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

from bench.errors import ConfigError
from bench.hardware import AUTO_FIELDS, resolve, resolve_device
from growth.api import option
from growth.schedule import ScheduleOptions

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
SUITES_FILE = Path(__file__).with_name("suites.yaml")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    # what runs
    method: str = option("large", "a registered method (python -m bench list)")
    arch: str = option("resnet20", "a registered architecture")
    dataset: str = option("cifar10", "the dataset", choices=("cifar10", "cifar100", "imagenet", "tinyshakespeare"))
    width_mult: float = option(1.0, "target width as a multiple of the standard network's", low=0, high=64,
                               low_open=True)
    # data
    data_dir: str = option("data", "where the dataset lies (torchvision CIFAR, the JPEG copy, ImageNet folders, or a "
                           "text: a folder holding input.txt, or a .txt file)")
    download: bool = option(False, "fetch torchvision's CIFAR into data_dir if absent (needs internet)")
    train_subset: int = option(0, "training images, class-balanced (text: training sequences per epoch); 0 = the "
                               "whole training split (text: as many as cover it once)", low=0)
    test_subset: int = option(0, "test images, class-balanced (text: the first N validation sequences); 0 = the "
                              "whole test split", low=0)
    subset_seed: int = option(0, "which balanced subset; shared by every run so methods see the same images", low=0)
    # optimisation
    epochs: int = option(15, "epochs of training", low=1)
    batch_size: int = option(128, "images per training step", low=1)
    eval_batch_size: int = option(500, "images per evaluation step (no effect on results)", low=1)
    lr: float = option(0.1, "peak learning rate, per image-averaged loss", low=0, high=1e30,  # fp32 holds it
                       low_open=True)
    optimizer: str = option("sgd", "sgd | adamw (bench/optim.py; both take the LR multipliers)",
                            choices=("sgd", "adamw"))
    momentum: float = option(0.9, "SGD momentum", low=0, high=1)
    nesterov: bool = option(False, "Nesterov momentum")
    beta1: float = option(0.9, "AdamW: decay of the first moment", low=0, high=1)
    beta2: float = option(0.999, "AdamW: decay of the second moment", low=0, high=1)
    weight_decay: float = option(5e-4, "SGD: L2, coupled (added to the gradient); AdamW: decoupled", low=0)
    lr_schedule: str = option("cosine", "cosine (to 0 at the end) | step (x lr_decay at lr_decay_epochs)",
                              choices=("cosine", "step"))
    warmup_epochs: float = option(0.0, "linear warm-up from 0, in epochs (fractions allowed)", low=0)
    lr_decay: float = option(0.1, "step schedule: factor applied at each milestone", low=0, high=1, low_open=True)
    lr_decay_epochs: tuple[int, ...] = option((), "step schedule: milestones in epochs", low=1)
    label_smoothing: float = option(0.0, "label smoothing of the training loss", low=0, high=1)
    # at most int64's largest less the offset of the growth stream's seed (bench/train.py)
    seed: int = option(0, "model init, data order and augmentation", low=0, high=2**63 - 1 - 1_000_003)
    # execution mode (recorded with every result; never mix modes in one table)
    device: str = option("auto", "auto (cuda if available) | cpu | cuda", choices=("auto", "cpu", "cuda"))
    # auto: resolved for the hardware when the spec is made (bench/hardware.py says how and why);
    # the resolved value is what the config hash covers and what the run records
    precision: str = option("auto", "auto (bf16 where the device computes it natively, else fp32) | fp32 | bf16",
                            choices=("auto", "fp32", "bf16"))
    channels_last: bool | str = option("auto", "channels_last memory format: auto | true | false")
    # On a Xeon with AMX, bf16 channels_last kernels are fast at multiples of 16 and up to 3x slower
    # than NCHW in between (ResNet-20 stage widths 12/24/48: 119 ms vs 64 ms a step); elsewhere 0 is fastest
    channels_last_align: int | str = option("auto", "use channels_last only while every width is a multiple of "
                                            "this (0: always) | auto", low=0)
    compile: bool = option(False, "torch.compile; recompiles at each new width")
    deterministic: bool = option(False, "deterministic algorithms: bit-exact resume on the CPU")
    threads: int = option(0, "torch CPU threads; 0 = OMP_NUM_THREADS if set, else the cores this process may use",
                          low=0)
    # output
    out_dir: str = option("results", "where run directories are written")
    checkpoint: bool = option(True, "save checkpoint.pt at every epoch end (resume after a crash)")
    tracker: str = option("none", "also log each epoch to an experiment tracker: none | tensorboard (pip install "
                          "'growbench[tracking]'; written to <run>/tensorboard)", choices=("none", "tensorboard"))
    # the shared growth schedule (growth/schedule.py), and the method's own options (its Options class)
    growth: ScheduleOptions = field(default_factory=ScheduleOptions)
    options: Any = field(default=None, metadata={"doc": "the method's own options (python -m bench list)"})
    # set by resolution, not a flag: the fields above that were asked as "auto"
    auto_resolved: tuple[str, ...] = ()
    # set by make_spec, not a flag: the preset the run was made from (reports leave smoke runs out)
    preset: str = ""

    def __post_init__(self):
        if self.options is None:  # RunSpec(): the method's default options
            from bench.methods import options_class
            object.__setattr__(self, "options", options_class(self.method)())


# fields that do not change what a run computes: left out of the config hash
UNHASHED = ("data_dir", "download", "out_dir", "eval_batch_size", "checkpoint", "threads", "auto_resolved", "preset",
            "tracker")
# fields that are not flags or preset keys
INTERNAL = ("auto_resolved", "preset")
OPTIONS = "options"  # the section holding the method's own options


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


def _check(name: str, value: Any, meta: dict) -> None:
    """The field's declared choices and limits (its ``option()`` metadata)."""
    if name in AUTO_FIELDS and value == "auto":
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name}: {value!r} not accepted; accepted values: {', '.join(map(str, choices))}")
    lo, hi, lo_open = meta.get("low"), meta.get("high"), meta.get("low_open", False)
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if lo is not None and (v < lo or (v == lo and lo_open)):
            raise ConfigError(f"{name}: {v} out of range; must be {'>' if lo_open else '>='} {lo}"
                              + (f" and <= {hi}" if hi is not None else ""))
        if hi is not None and v > hi:
            raise ConfigError(f"{name}: {v} out of range; must be <= {hi}")


def _build(cls, values: dict[str, Any], prefix: str = "", internal: bool = False):
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = prefix + key
        if key not in fields or (full in INTERNAL and not internal):
            accepted = [prefix + n for n in fields if prefix + n not in INTERNAL]
            raise ConfigError(f"unknown field {full!r}; accepted fields: {', '.join(accepted)}")
        if cls is RunSpec and key == OPTIONS:
            continue  # built below, once the method is known
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping of {hints[key].__name__} fields")
            kwargs[key] = _build(hints[key], value, full + ".", internal)
            continue
        kwargs[key] = _coerce(full, value, hints[key])
        _check(full, kwargs[key], fields[key].metadata)
    if cls is RunSpec:
        kwargs[OPTIONS] = _method_options(kwargs.get("method", RunSpec.method), values.get(OPTIONS) or {})
    return cls(**kwargs)


def _method_options(method: str, values: Any):
    from bench.methods import METHODS, options_class

    if method not in METHODS:
        raise ConfigError(f"method: {method!r} not accepted; accepted values: {', '.join(METHODS)}")
    cls = options_class(method)
    if not isinstance(values, dict):
        raise ConfigError(f"{OPTIONS}: expected a mapping of {method}'s options")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{OPTIONS}.{unknown[0]}: not an option of method {method}; its options: "
                          f"{', '.join(names) or 'none'} (python -m bench list)")
    return _build(cls, values, OPTIONS + ".")


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
    """Resolve a RunSpec: dataclass defaults <- preset <- preset's per-dataset block <- the arch's recipe
    for the preset (its model file) <- the preset's per-arch block <- its per-method block <- overrides.

    Overrides may use dotted names for nested sections (``**{"growth.p_c": 0.3}``)."""
    from bench.methods import method_class
    from bench.models import REGISTRY

    values: dict[str, Any] = {}
    over = _nest(overrides)
    if preset is not None:
        presets = load_presets()
        if preset not in presets:
            raise ConfigError(f"preset: {preset!r} not accepted; accepted values: {', '.join(presets)}")
        p = dict(presets[preset])
        per_dataset = p.pop("datasets", {}) or {}
        per_arch = p.pop("archs", {}) or {}
        per_method = p.pop("methods", {}) or {}
        values = _merge(values, p)
        dataset = over.get("dataset", values.get("dataset", RunSpec.dataset))
        values = _merge(values, per_dataset.get(dataset, {}))
        # an architecture's training recipe (LR, warm-up), shared by every method that trains it
        arch = over.get("arch", values.get("arch", RunSpec.arch))
        if arch in REGISTRY:  # an unknown arch is refused below, with the accepted ones
            values = _merge(values, REGISTRY[arch].recipe.get(preset, {}))
        values = _merge(values, per_arch.get(arch, {}))
        # a method's budgets for this preset (the smoke preset cuts the gradient growers' to its size)
        values = _merge(values, per_method.get(over.get("method", values.get("method", RunSpec.method)), {}))
    values = _merge(values, over)
    spec = dataclasses.replace(_build(RunSpec, values), preset=preset or "")
    resolve_device(spec)  # --device cuda without CUDA: refused here, before anything runs
    spec = resolve(spec)
    if spec.arch not in REGISTRY:
        raise ConfigError(f"arch: {spec.arch!r} not accepted; accepted values: {', '.join(REGISTRY)}")
    from bench.data import TEXT_DATASETS
    from bench.models import base_widths, model_class
    if model_class(spec.arch).tokens != (spec.dataset in TEXT_DATASETS):
        kind = "a language model" if model_class(spec.arch).tokens else "an image model"
        raise ConfigError(f"dataset: {spec.arch} is {kind} and {spec.dataset!r} is not its kind of data; "
                          f"{spec.arch} trains on {', '.join(model_class(spec.arch).datasets) or 'images'}")
    if model_class(spec.arch).tokens and not getattr(method_class(spec.method), "supports_tokens", True):
        raise ConfigError(f"method: {spec.method} does not grow a language model yet (its growth signals read image "
                          f"activations); on {spec.arch} run large, small, growing*, full, net2net, gradmax or msg")
    if not model_class(spec.arch).tokens and not getattr(method_class(spec.method), "supports_images", True):
        raise ConfigError(f"method: {spec.method} grows transformers only (its mask sits on channels-last "
                          f"activations, and a BatchNorm after a masked conv would undo it); {spec.arch} is an image model")
    if not spec.out_dir.strip():
        raise ConfigError("out_dir: empty; name the folder for run directories (default results)")
    narrowest = min(base_widths(spec.arch).values())
    if round(narrowest * spec.width_mult) < 1:
        raise ConfigError(f"width_mult: {spec.width_mult} leaves {spec.arch}'s narrowest layer ({narrowest} channels) "
                          f"with none; must be >= {0.5 / narrowest:.3g}")
    if spec.lr_schedule == "step" and any(e > spec.epochs for e in spec.lr_decay_epochs):
        raise ConfigError(f"lr_decay_epochs: {spec.lr_decay_epochs} must lie within 1..epochs ({spec.epochs})")
    if method_class(spec.method).grows or spec.growth.schedule == "list":
        from bench.flops import schedule_of
        from growth.schedule import ScheduleError
        try:
            schedule_of(spec)
        except ScheduleError as e:
            raise ConfigError(str(e)) from None
    if spec.warmup_epochs >= spec.epochs:
        raise ConfigError(f"warmup_epochs: {spec.warmup_epochs} must be < epochs ({spec.epochs})")
    return spec


# growth fields read only under some schedules or settings (the rest apply whenever the method reads them)
_SCHEDULE_FIELDS = {"growth_epochs": ("list",), "t0": ("exp", "fixed"), "p_t": ("exp",)}


def inapplicable(spec: RunSpec, fields) -> dict[str, str]:
    """Of ``fields`` (flat names: "lr_decay", "growth.p_c"), those that cannot change ``spec``'s computation,
    each with the reason: growth fields its method does not read (methods' ``growth_fields``) or that its
    schedule does not use, step-schedule fields under cosine, one optimizer's fields under the other."""
    from bench.methods import method_class

    reads = method_class(spec.method).growth_fields
    gs = spec.growth
    why = {}
    for key in fields:
        section, _, name = key.partition(".")
        if section == "growth" and name:
            if reads is not None and name not in reads:
                why[key] = f"method {spec.method} " + ("never grows" if not reads else f"reads only {', '.join(reads)}")
            elif name in _SCHEDULE_FIELDS and gs.schedule not in _SCHEDULE_FIELDS[name]:
                why[key] = f"growth.schedule is {gs.schedule} (it uses {name} under {' or '.join(_SCHEDULE_FIELDS[name])})"
            elif name in ("batch_max_factor", "batch_lr_scaling") and not gs.batch_adapt:
                why[key] = "growth.batch_adapt is off"
        elif key in ("lr_decay", "lr_decay_epochs") and spec.lr_schedule != "step":
            why[key] = f"lr_schedule is {spec.lr_schedule} (the step schedule uses it)"
        elif key in ("beta1", "beta2") and spec.optimizer != "adamw":
            why[key] = f"optimizer is {spec.optimizer} (adamw uses it)"
        elif key in ("momentum", "nesterov") and spec.optimizer != "sgd":
            why[key] = f"optimizer is {spec.optimizer} (sgd uses it)"
    return why


def flat_keys(overrides: dict) -> list[str]:
    """Override names as flat field names: {"growth": {"p_c": 1}} and {"growth.p_c": 1} give ["growth.p_c"]."""
    return [f"{k}.{n}" if isinstance(v, dict) else k for k, v in _nest(overrides).items()
            for n in (v if isinstance(v, dict) else [None])]


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def spec_from_dict(d: dict[str, Any]) -> RunSpec:
    """A stored config (config.json) back into its RunSpec, resolved fields included."""
    return _build(RunSpec, upgrade_config(d), internal=True)


def upgrade_config(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written before methods declared their own options (all of them then lived in
    ``growth``, e.g. ``growth.net2net_noise``): each old key the run's method declares in its Options'
    ``LEGACY`` table moves to ``options``; the other methods' keys had no effect on the run and go."""
    growth = d.get("growth")
    if OPTIONS in d or not isinstance(growth, dict):
        return d
    from bench.methods import METHODS, options_class

    schedule_keys = {f.name for f in dataclasses.fields(ScheduleOptions)}
    legacy = getattr(options_class(d["method"]), "LEGACY", {}) if d.get("method") in METHODS else {}
    options = {legacy[k]: v for k, v in growth.items() if k in legacy}
    return {**d, "growth": {k: v for k, v in growth.items() if k in schedule_keys}, OPTIONS: options}


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
    # the defaults: RunSpec's, with the method's default options
    default = {**spec_to_dict(RunSpec()), OPTIONS: spec_to_dict(RunSpec(method=spec.method))[OPTIONS]}
    d = _changed(spec_to_dict(resolve(spec)), default)
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


def spec_flags(spec: RunSpec, preset: str) -> list[str]:
    """Command-line flags that give ``spec`` again from ``preset`` (``--preset PRESET`` first): the method, arch,
    dataset and the "auto" fields as resolved here, and every field that changes what the run computes where it
    differs from the preset's value, so that a command measuring "this run" (bench speed) cannot drop an override."""
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    base = flat_config(make_spec(preset, method=spec.method, arch=spec.arch, dataset=spec.dataset))
    mine = flat_config(spec)
    always = ("method", "arch", "dataset", *AUTO_FIELDS)
    keys = [*always, *(k for k, v in mine.items() if k not in always and (k not in base or base[k] != v))]
    return ["--preset", preset, *(x for k in keys for x in ("--" + k.replace("_", "-"), text(mine[k])))]


def run_id(spec: RunSpec) -> str:
    return f"{spec.method}-{spec.arch}-{spec.dataset}-s{spec.seed}-{config_hash(spec)[:10]}"


def field_names(cls=RunSpec, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, type hint, doc) for every leaf field, for the CLI's flags; ``options.NAME`` for
    every option any method declares (the config checks it against the run's method)."""
    out = []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, hint in _hints(cls).items():
        if prefix + name in INTERNAL:
            continue
        if cls is RunSpec and name == OPTIONS:
            out += _option_fields()
        elif dataclasses.is_dataclass(hint):
            out += field_names(hint, prefix + name + ".")
        else:
            out.append((prefix + name, hint, fields[name].metadata.get("doc", "")))
    return out


def _option_fields() -> list[tuple[str, Any, str]]:
    from bench.methods import METHODS, options_class

    seen: dict[str, tuple[Any, list[str]]] = {}
    for m in METHODS:
        cls = options_class(m)
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, (hints[f.name], []))[1].append(m)
    return [(f"{OPTIONS}.{n}", hint, "option of " + ", ".join(ms)) for n, (hint, ms) in seen.items()]


def choices(name: str, cls=RunSpec) -> tuple:
    """The accepted values of a field, as declared."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]


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
    keys = flat_keys(overrides)
    specs, used, why = [], set(), {}
    for run in suite["runs"]:
        for seed in run.get("seeds", seeds):
            entry = {k: v for k, v in run.items() if k != "seeds"}
            base = _nest({**suite.get("common", {}), **entry, "seed": seed})
            try:
                spec = make_spec(preset, **_merge(base, _nest(overrides)))
            except ConfigError:  # perhaps through a field this run does not read (a growth epoch on large)
                spec = None
            # a flag that does not apply to this run is left out of it: its run id stays the one of its computation
            skip = inapplicable(spec or make_spec(preset, **base), keys)
            if skip or spec is None:
                spec = make_spec(preset, **_merge(base, _without(_nest(overrides), skip)))
            used |= set(keys) - set(skip)
            why.update(skip)
            specs.append(spec)
    unused = [k for k in keys if k not in used]
    if unused:
        raise ConfigError(f"{unused[0]}: applies to no run of suite {name}: {why[unused[0]]}")
    return specs


def _without(nested: dict, keys) -> dict:
    """``nested`` less the flat ``keys`` ("growth.p_c")."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in nested.items()}
    for key in keys:
        head, _, rest = key.partition(".")
        if rest:
            out.get(head, {}).pop(rest, None)
        else:
            out.pop(head, None)
    return out
