"""The wall-clock protocol: speed-ups come from runs timed alone on one machine, in one sitting.

``python -m bench wallclock --data-dir D [--arch resnet20,vgg11] [--seeds 0,1,2]`` trains the ``wallclock``
suite's runs (large, full, full with batch-size adaptation, per architecture) back to back in this process,
seed by seed (large, full, full+ba of seed 0, then seed 1, ...: a drift of the machine over the sitting
touches every method alike), into a folder of its own (default results/wallclock/<UTC time>): these runs share
their ids with the same runs of other sweeps, and their times must not be mixed with times taken otherwise.

It refuses to start on a busy machine. Each run's result records its sitting and whether it had the machine to
itself (``alone``: in every epoch other processes kept at most OTHERS_MAX cores busy, and it was never resumed); the report's wall-clock table takes only such runs.
An interrupted sitting resumes with the same --out-dir: finished runs stay, an unfinished one starts over (a
resumed run's time is not a whole run's). At the end the step-time prediction (bench/speed.py, in a fresh
process, same threads and precision) is measured per architecture, and ``sitting.json`` gets the measured
and predicted speed-ups side by side.
"""
from __future__ import annotations

import shutil
import socket
import statistics
import time
from pathlib import Path

from bench import config, hardware
from bench.config import ConfigError, RunSpec
from bench.records import RunDir, read_json, write_json
from bench.speed import measure_in_fresh_process

SUITE = "wallclock"
SITTING = "sitting.json"
OTHERS_MAX = 0.25  # cores other processes may keep busy while a run counts as alone (noise: a shell, a tick)
BUSY_REFUSE = 0.5  # cores kept busy by others at the start that refuse a sitting (without --allow-busy)


def alone(result: dict) -> tuple[bool, str]:
    """Whether a finished run had the machine to itself all along, and if not why (from its load records: the
    cores other processes kept busy, machine-wide; its own CPU share says little with several threads, whose
    serial parts leave threads idle on a machine alone)."""
    loads = [h.get("load", {}) for h in result.get("epochs", [])]
    if not loads or any(ld.get("others_cores") is None for ld in loads):
        return False, "no record of other processes' load in every epoch"
    if result.get("resumed_at_epochs"):
        return False, f"resumed at epochs {result['resumed_at_epochs']}"
    worst = max(loads, key=lambda ld: ld["others_cores"])
    if worst["others_cores"] > OTHERS_MAX:
        return False, f"{hardware.competition(worst, 0)} in an epoch"
    return True, ""


def plan(archs: list[str] | None, seeds: list[int] | None, preset: str | None, overrides: dict,
         out_dir: str) -> list[RunSpec]:
    """The suite's runs for ``archs`` and ``seeds`` (all where None), ordered arch by arch, then seed by seed."""
    specs = config.suite_specs(SUITE, preset, **{**overrides, "out_dir": out_dir})
    known = list(dict.fromkeys(s.arch for s in specs))
    for a in archs or []:
        if a not in known:
            raise ConfigError(f"--arch: {a!r} is not in the {SUITE} suite (bench/suites.yaml): {', '.join(known)}")
    known_seeds = sorted({s.seed for s in specs})
    for s in seeds or []:
        if s not in known_seeds:
            raise ConfigError(f"--seeds: {s} is not among the {SUITE} suite's seeds {known_seeds}")
    chosen = [s for s in specs if (archs is None or s.arch in archs) and (seeds is None or s.seed in seeds)]
    order = archs or known
    entry = {config.run_id(s): i for i, s in enumerate(specs)}
    return sorted(chosen, key=lambda s: (order.index(s.arch), s.seed, entry[config.run_id(s)]))


def label(spec: RunSpec) -> str:
    """The method as the report names it (reports.load.method_label): batch-size adaptation is a variant."""
    return spec.method + ("+ba" if spec.growth.batch_adapt else "")


def machine_label() -> str:
    """The machine a sitting's times belong to (bench/hardware.py's fingerprint without the mode)."""
    import torch

    fp = hardware.fingerprint(torch.device("cpu"), "")
    return hardware.fingerprint_key({k: v for k, v in fp.items() if k != "mode"})


def run_sitting(archs, seeds, preset, overrides: dict, out_dir: str | None, allow_busy: bool = False,
                predict: bool = True, rounds: int = 3, steps: int = 10, repeats: int = 3, log=print) -> int:
    from bench.train import run

    folder = Path(out_dir or f"results/wallclock/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    cores = hardware.allowed_cores()
    threads = overrides.pop("threads", 0) or hardware.threads_default(0.0)  # every core: the machine is ours
    specs = plan(archs, seeds, preset, {**overrides, "threads": threads}, str(folder))
    ids = [config.run_id(s) for s in specs]
    machine = machine_label()
    record = read_json(folder / SITTING) if (folder / SITTING).is_file() else None
    if record is not None:
        if record.get("runs") != ids:
            raise ConfigError(f"--out-dir {folder}: holds a sitting of other runs ({len(record.get('runs', []))}); "
                              "resume it with its own --arch/--seeds, or choose a new folder")
        if record.get("machine") != machine or record.get("threads") != threads:
            raise ConfigError(f"--out-dir {folder}: that sitting began on {record.get('machine')} with "
                              f"{record.get('threads')} thread(s), this is {machine} with {threads}: times of two "
                              "machines are not one sitting; choose a new folder")
    elif folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"--out-dir {folder}: not empty and not a wall-clock sitting; choose a new folder")
    busy = hardware.busy_cores(cores, seconds=1.0)
    if busy >= BUSY_REFUSE:
        msg = (f"the machine is busy: other processes keep {busy:.1f} of the {len(cores)} core(s) this process may "
               "use busy; a wall-clock sitting needs the machine alone")
        if not allow_busy:
            raise ConfigError(msg + " (stop them, or --allow-busy: runs that shared the machine are then left out)")
        log(f"WARNING: {msg}; --allow-busy: each run's load record decides whether it counts as alone")
    if record is None:
        folder.mkdir(parents=True, exist_ok=True)
        record = {"sitting": folder.name, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "host": socket.gethostname(), "machine": machine, "threads": threads, "cores": cores,
                  "runs": ids}
        write_json(folder / SITTING, record)
    log(f"wall-clock sitting {folder} ({machine}, {threads} thread(s)): {len(specs)} runs back to back")
    for i, (spec, rid) in enumerate(zip(specs, ids), 1):
        rd = RunDir(folder / rid)
        if rd.complete and rd.result().get("wallclock", {}).get("sitting") == record["sitting"]:
            log(f"[{i}/{len(specs)}] {rid}: done in this sitting")
            continue
        if rd.complete:
            raise ConfigError(f"--out-dir {folder}: {rid} is finished but not in this sitting; a sitting's folder "
                              "holds only its own runs")
        if rd.path.exists():  # an interrupted run: its time would not be a whole run's, so it starts over
            log(f"[{i}/{len(specs)}] {rid}: unfinished, started over")
            shutil.rmtree(rd.path)
        log(f"[{i}/{len(specs)}] {rid}")
        result = run(spec, progress=False)
        ok, why = alone(result)
        result["wallclock"] = {"sitting": record["sitting"], "order": i, "alone": ok, "why": why}
        rd.write_result(result)
        if not ok:
            log(f"  not alone: {why}; its time is left out of speed-ups")
    summary = summarize(folder, specs)
    if predict:
        for sp in specs:
            if sp.seed == specs[0].seed and label(sp) in summary.get(sp.arch, {}).get("speedups", {}):
                log(f"predicting {sp.arch} {label(sp)} from step times (bench/speed.py, {repeats} fresh process(es))")
                summary[sp.arch].setdefault("predicted", {})[label(sp)] = prediction(sp, threads, rounds, steps, repeats)
    record["summary"] = summary
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(folder / SITTING, record)
    log(text(summary))
    return 0


def summarize(folder: Path, specs: list[RunSpec]) -> dict:
    """Per arch: each method's training seconds (steps + growth) per seed, and each seed's speed-up over the
    large model of the same seed (runs not alone left out)."""
    from bench.methods import by_role

    large = by_role("target")
    out: dict[str, dict] = {}
    for spec in specs:
        r = RunDir(folder / config.run_id(spec)).result()
        a = out.setdefault(spec.arch, {"seconds": {}, "speedups": {}, "left_out": []})
        if not r["wallclock"]["alone"]:
            a["left_out"].append(f"{label(spec)} s{spec.seed}: {r['wallclock']['why']}")
            continue
        a["seconds"].setdefault(label(spec), {})[str(spec.seed)] = r["times"]["train_seconds"] + r["times"]["growth_seconds"]
    for a in out.values():
        base = a["seconds"].get(large, {})
        for method, per_seed in a["seconds"].items():
            if method != large:
                a["speedups"][method] = {s: base[s] / t for s, t in per_seed.items() if s in base}
    return out


def prediction(spec: RunSpec, threads: int, rounds: int, steps: int, repeats: int = 3) -> dict:
    """The step-time prediction of ``spec``'s speed-up over the large model for the run as configured (its
    preset and every override: precision, memory format, epochs, batch size, subset, growth schedule, batch
    adaptation), in ``repeats`` fresh processes: on a VM the large model's step time moves between two levels
    some 30 % apart in phases of tens of seconds, and one process's short burst catches one of them
    (docs/measurements.md), so every repeat is kept, to show that spread, and the median one gives the
    prediction and its step times."""
    flags = [*config.spec_flags(spec, spec.preset or "quick"), "--rounds", str(rounds), "--steps", str(steps),
             "--bench-threads", str(threads)]
    each = [measure_in_fresh_process(flags) for _ in range(repeats)]
    b = sorted(each, key=lambda e: e["speedup"])[(repeats - 1) // 2]
    return {"speedup": b["speedup"], "interleaved_speedup": b["interleaved_speedup"],
            "repeats": [e["speedup"] for e in each],
            # per stage, what the run's own account (result.json "accounting") is compared with
            **{k: b[k] for k in ("stage_step_seconds", "stage_batch", "full_step_seconds", "growth_seconds",
                                 "grown_seconds", "large_seconds")},
            "command": " ".join(["python -m bench speed", *flags])}


def text(summary: dict) -> str:
    lines = []
    for arch, a in summary.items():
        for method, per_seed in a["speedups"].items():
            if not per_seed:
                continue
            vals = list(per_seed.values())
            mean = statistics.mean(vals)
            line = (f"{arch} {method}: speed-up over large {mean:.3f}x"
                    + (f" +- {statistics.stdev(vals):.3f}" if len(vals) > 1 else "") + f" ({len(vals)} seed(s))")
            p = a.get("predicted", {}).get(method)
            if p:
                spread = (f" (median of {len(p['repeats'])} processes, {min(p['repeats']):.3f}-{max(p['repeats']):.3f})"
                          if len(p.get("repeats", [])) > 1 else "")
                line += (f"; predicted from step times {p['speedup']:.3f}x{spread}: measured / predicted "
                         f"{mean / p['speedup']:.3f}")
            lines.append(line)
        lines += [f"{arch}: left out: {w}" for w in a["left_out"]]
    return "\n".join(lines) or "no run had the machine to itself: no speed-up"
