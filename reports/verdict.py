"""``python -m reports.verdict --results results``: the headline pair (the large model and the paper's method on
ResNet-20 / CIFAR-10 at the quick preset, seed 0; `make reproduce` trains it) beside the reference runs shipped in
results/reference/quick and the paper's numbers, as a short block of text."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.load import load_runs
from reports.paper import lookup

SETTING, PRESET, SEED = "resnet20/cifar10", "quick", 0
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / PRESET
CITATION = ("Yuan, Savarese, Maire: Accelerated Training via Incrementally Growing Neural Networks using Variance "
            "Transfer and Learning Rate Adaptation, NeurIPS 2023")


# the execution modes a run may have been made in: the config hash covers them, and "auto" resolves them for
# the machine (bench/hardware.py), so a pair trained elsewhere (the AMD-made reference runs) has other ids
MODES = [dict(precision=p, channels_last=c, channels_last_align=a)
         for p in ("fp32", "bf16") for c in (True, False) for a in (0, 16)]


def headline_ids(mode: dict | None = None) -> dict[str, str]:
    """The run ids of the headline pair: the quick preset's config, so a reference run matches exactly;
    ``mode`` fixes the execution mode (default: as resolved for this machine)."""
    from bench.config import make_spec, run_id

    return {m: run_id(make_spec(PRESET, method=m, arch="resnet20", dataset="cifar10", seed=SEED, **(mode or {})))
            for m in ("large", "full")}


def headline(results: Path) -> dict | None:
    """{"large": row, "full": row} of the headline pair's complete runs in ``results``, both in one execution
    mode, this machine's first (None if no mode has both)."""
    if not results.is_dir() or not any(results.glob("*/config.json")):
        return None
    runs, _, _ = load_runs(results)
    if runs.empty:
        return None
    for ids in [headline_ids(), *(headline_ids(mode) for mode in MODES)]:  # this machine's mode first
        pair = {m: runs[runs.run_id == rid].iloc[0] for m, rid in ids.items() if (runs.run_id == rid).any()}
        if len(pair) == 2:
            return pair
    return None


def _speedup(pair: dict) -> str:
    large, full = pair["large"], pair["full"]
    if large.device != full.device or large["mode"] != full["mode"]:
        return "n/a (two machines)"
    loaded = " (loaded: not a measurement)" if large.load.startswith("loaded") or full.load.startswith("loaded") else ""
    return f"{large.train_seconds / full.train_seconds:.2f}x{loaded}"


def block(pair: dict, reference: dict | None) -> str:
    cols = [("this run", pair), ("reference run", reference)]
    paper = {m: lookup(SETTING, m, "accuracy") for m in ("large", "full")}
    paper_cost = lookup(SETTING, "full", "cost")

    def acc(p, m):
        return f"{p[m].acc:.2f} %" if p else "not shipped"

    def diff(p):
        return f"{p['full'].acc - p['large'].acc:+.2f}" if p else ""

    def cost(p):
        return f"{p['full'].cost:.1f} %" if p else ""

    rows = [("large: test accuracy", [acc(p, "large") for _, p in cols], f"{paper['large'].value:.2f} %"),
            ("full: test accuracy", [acc(p, "full") for _, p in cols], f"{paper['full'].value:.2f} %"),
            ("full - large (points)", [diff(p) for _, p in cols],
             f"{paper['full'].value - paper['large'].value:+.2f}"),
            ("full: training FLOPs of large", [cost(p) for _, p in cols], f"{paper_cost.value:.1f} %"),
            ("wall-clock speed-up", [_speedup(p) if p else "" for _, p in cols], "not stated for ResNet-20")]
    proto = pair["large"].protocol
    table = [["", "this run", "reference run", "paper"]] + [[name, *ours, theirs] for name, ours, theirs in rows]
    w = [max(len(r[i]) for r in table) + 2 for i in range(4)]  # every cell fits its column
    lines = [f"Headline: ResNet-20 / CIFAR-10, {proto}, seed {SEED}",
             "".join(h.ljust(n) for h, n in zip(["", "this run", "reference run", "paper"], w))]
    lines += ["".join(c.ljust(n) for c, n in zip([name, *ours, theirs], w)) for name, ours, theirs in rows]
    lines += [f"paper: {CITATION};",
              f"       100 epochs on all images (values via the growing_wiki, {paper['large'].provenance}). Absolute",
              "       accuracies differ with the training budget: compare the differences and the cost.",
              f"reference run: results/reference/{PRESET} (the same config; its machine: {reference['large'].device})"
              if reference else "reference run: none shipped for this config",
              "next: make report  (reports/out/index.html: every table and figure)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.verdict", allow_abbrev=False,
                                description="the headline pair beside the shipped reference runs and the paper")
    p.add_argument("--results", default="results", help="the folder `make reproduce` trained into")
    args = p.parse_args(argv)
    pair = headline(Path(args.results))
    if pair is None:
        print(f"verdict: {args.results} holds no complete large and full ResNet-20 / CIFAR-10 runs at the "
              f"{PRESET} preset, seed {SEED}: run make reproduce", file=sys.stderr)
        return 2
    print(block(pair, headline(REFERENCE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
