"""The suite's methods by name: the one table a new method adds its line to.

Each entry names the class as "module:Class"; it is imported the first time it is asked for, so the
harness imports no method for its side effects and a method's file imports nothing of the harness.
The interface every method implements is growth/api.py. Adding a method: one file (its class, with
its Options and traits) and one line here; README "Adding a method" shows a worked example.
"""
from __future__ import annotations

import dataclasses
import importlib
from functools import lru_cache

from growth.api import Method, MethodSetup, traits

REGISTRY: dict[str, str] = {
    "large": "baselines.fixed:Large",
    "small": "baselines.fixed:Small",
    "growing": "growth.method:Growing",
    "growing+vrs": "growth.method:GrowingVRS",
    "growing+lra": "growth.method:GrowingLRA",
    "full": "growth.method:Full",
    "net2net": "baselines.net2net:Net2Net",
    "gradmax": "baselines.gradmax:GradMax",
    "firefly": "baselines.firefly:Firefly",
    "firefly_simple": "baselines.firefly:FireflySimple",
    "splitting": "baselines.splitting:Splitting",
    "msg": "baselines.msg:MSG",
    "random_units": "baselines.random_units:RandomUnits",
}
METHODS = tuple(REGISTRY)


@lru_cache(maxsize=None)
def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise KeyError(f"method: {name!r} not accepted; accepted values: {', '.join(METHODS)}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def by_role(role: str) -> str:
    """The method with this role: "target" (the full-size model), "paper" (the paper's method)."""
    return next(m for m in METHODS if method_class(m).role == role)


def options_class(name: str) -> type:
    return method_class(name).Options


def method_traits(name: str) -> dict:
    return traits(method_class(name))


def create(spec) -> Method:
    """The method of ``spec``, given what it needs from the run (growth/api.py MethodSetup): target widths,
    a FLOP counter, epochs, batch size, the growth schedule and the method's own options."""
    from bench.flops import run_flops
    from bench.models import scaled_widths

    setup = MethodSetup(target=scaled_widths(spec.arch, spec.width_mult), flops=run_flops(spec), epochs=spec.epochs,
                        batch_size=spec.batch_size, schedule=spec.growth, options=spec.options)
    return method_class(spec.method)(setup)


def describe(name: str) -> str:
    """A method's entry in ``python -m bench list``: summary, traits and options with their defaults."""
    t = method_traits(name)
    flags = [k for k in ("grows", "uses_lra") if t[k]] + ([f"role={t['role']}"] if t["role"] != "baseline" else [])
    if t["original_optimizer"]:
        flags.append(f"optimizer={t['original_optimizer']}")
    lines = [f"  {name:15s} {t['summary']}" + (f" [{', '.join(flags)}]" if flags else "")]
    for f in dataclasses.fields(options_class(name)):
        lines.append(f"      --options.{f.name.replace('_', '-')} (default {f.default!r}): {f.metadata.get('doc', '')}")
    return "\n".join(lines)
