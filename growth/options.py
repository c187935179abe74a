"""Declared options: a field with its documentation and limits, which the harness's config validates and
its CLI offers. Methods declare theirs in an ``Options`` dataclass (growth/api.py); the shared growth
schedule declares its own (growth/schedule.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def option(default: Any, doc: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False) -> Any:
    """A documented config field: ``choices`` its allowed values, ``low``/``high`` its limits
    (``low_open``: the lower limit itself is refused). The config validates it; the CLI shows ``doc``."""
    meta = {"doc": doc, "choices": choices, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""
