"""``python -m bench run | sweep | list | status``.

Every RunSpec field is a flag (``--batch-size 64``, ``--growth.p-c 0.3``); a preset supplies the
rest. Invalid configurations exit with status 2 before anything is written.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from pathlib import Path

from bench import config
from bench.config import ConfigError
from bench.errors import WRITE_ERRNOS, LaunchError
from bench.data import DataError
from bench.records import RunDirError
from bench.train import Diverged, Interrupted


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _dashed(arg: str) -> str:
    """``--growth.growth_epochs`` as ``--growth.growth-epochs``: config files and ``bench list`` spell
    field names with underscores, the flags with dashes; both are accepted."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return name.replace("_", "-") + eq + value


def _add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="a preset of bench/presets.yaml (smoke, quick, paper)")
    for name, hint, doc in config.field_names():
        p.add_argument(_flag(name), dest=f"spec:{name}", default=None, metavar=getattr(hint, "__name__", "LIST").upper(),
                       help=argparse.SUPPRESS if "." in name else doc.replace("%", "%%"))
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar (auto: only when stderr is a terminal)")


def _overrides(args) -> dict:
    return {k[5:]: v for k, v in vars(args).items() if k.startswith("spec:") and v is not None}


def _progress(args):
    return {"auto": None, "on": True, "off": False}[args.progress]


def cmd_run(args) -> int:
    from bench.train import run

    overrides = _overrides(args)
    spec = config.make_spec(args.preset, **overrides)
    for key, why in config.inapplicable(spec, config.flat_keys(overrides)).items():
        raise ConfigError(f"{key}: does not apply to this run: {why}; leave it out, as it would give the same "
                          "computation a second run id")
    result = run(spec, progress=_progress(args))
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks for the run
        print(json.dumps({"run_id": result["run_id"], "final_test_acc": result["final_test_acc"],
                          "train_flops": result["flops"]["train"], "total_seconds": result["times"]["total_seconds"],
                          "world_size": result.get("world_size", 1)}))
    return 0


def cmd_sweep(args) -> int:
    from bench.records import RunDir
    from bench.train import run

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # under torchrun: ranks would part ways at a skipped run
        raise ConfigError("sweep under torchrun: not supported (a run one rank skips, another would train); "
                          "use --launcher local|slurm --tasks-per-node N, or torchrun -m bench run for one run")
    for flag in ("max_parallel", "tasks_per_node"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: {getattr(args, flag)}; at least 1")
    if args.tasks_per_node > 1 and args.launcher == "inline":
        raise ConfigError("--tasks-per-node: several processes per run need --launcher local or slurm "
                          "(or torchrun --nproc_per_node=N -m bench run ... for one run)")
    specs = config.suite_specs(args.suite, args.preset, **_overrides(args))
    seen, unique = set(), []
    for s in specs:
        if config.run_id(s) not in seen:
            seen.add(config.run_id(s))
            unique.append(s)
    print(f"sweep {args.suite}: {len(unique)} runs" + ("" if args.launcher == "inline" else f", launcher {args.launcher}"))
    if args.suite == "wallclock":  # its runs' times are only worth a speed-up under the protocol
        print("note: a sweep of the wallclock suite is no wall-clock sitting; python -m bench wallclock runs it back "
              "to back, alone, and records which runs had the machine to themselves (README: Wall-clock)")
    if args.launcher != "inline":
        from bench import launch

        if args.max_requeues < 0:
            raise ConfigError(f"--max-requeues: {args.max_requeues}; 0 or more")
        res = launch.SlurmResources(partition=args.partition, tasks_per_node=args.tasks_per_node,
                                    gpus_per_task=args.gpus_per_task,
                                    cpus_per_task=args.cpus_per_task, time_min=args.time_min,
                                    signal_delay_s=args.signal_delay_s, extra=tuple(args.sbatch),
                                    max_requeues=args.max_requeues, job_name=f"growbench-{args.suite}")
        launch.sbatch_options(res.extra)  # a malformed --sbatch refused before anything is submitted
        out_dir = unique[0].out_dir
        # a run whose job is still queued or running is attached to, never submitted a second time
        live = launch.live_jobs(out_dir, [config.run_id(s) for s in unique])
        todo = []
        for i, spec in enumerate(unique, 1):
            rid = config.run_id(spec)
            state = RunDir(f"{spec.out_dir}/{rid}").state()
            print(f"[{i}/{len(unique)}] {rid} ({state}" + (f"; {live[rid]}: not submitted again" if rid in live else "")
                  + ")", flush=True)
            if state != "complete" and rid not in live:
                todo.append(spec)
        if args.dry_run:
            return 0
        if not todo:
            print(f"nothing to submit: {len(live)} runs have a live job, the rest are complete; "
                  f"python -m bench status --out-dir {out_dir}")
            return 0
        jobs = launch.submit(todo, args.launcher, out_dir, max_parallel=args.max_parallel, res=res)
        if args.launcher == "slurm":
            print(f"submitted {len(jobs)} runs as one job array" + (f" ({len(live)} more already queued or running)"
                                                                     if live else "")
                  + f"; python -m bench status --out-dir {out_dir}")
            return 0
        return _sweep_outcome(args.suite, unique)
    skipped = 0
    for i, spec in enumerate(unique, 1):
        rid = config.run_id(spec)
        state = RunDir(f"{spec.out_dir}/{rid}").state()
        print(f"[{i}/{len(unique)}] {rid} ({state})", flush=True)
        if args.dry_run:
            continue
        try:
            run(spec, progress=_progress(args))
        except (DataError, Interrupted):
            raise
        except OSError as e:  # a full disk fails every run after it too: stop at the first, in one line
            if e.errno in WRITE_ERRNOS:
                raise
            print(f"  FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        except RunDirError as e:  # locked by another process, or made for another config: not ours to train
            skipped += 1
            print(f"  skipped: {e}", file=sys.stderr)
        except Exception as e:  # one failed run does not stop the sweep; it is recorded in failed.json
            print(f"  FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    if args.dry_run:
        return 0
    if skipped:
        print(f"{skipped} of {len(unique)} runs skipped (locked by another process or made for another config)",
              file=sys.stderr)
    return _sweep_outcome(args.suite, unique)


def _sweep_outcome(suite: str, specs) -> int:
    """The sweep's last line, from what each run's folder holds (not from what its process said): complete,
    failed, not complete (killed, stopped, never started); exit 1 unless every run is complete."""
    from bench.records import RunDir

    states = {config.run_id(s): RunDir(f"{s.out_dir}/{config.run_id(s)}").state() for s in specs}
    n_complete = sum(v == "complete" for v in states.values())
    n_failed = sum(v == "failed" for v in states.values())
    rest = sorted(rid for rid, v in states.items() if v not in ("complete", "failed"))
    line = f"sweep {suite}: {n_complete} complete, {n_failed} failed, {len(rest)} not complete of {len(states)}"
    if rest:
        line += f" ({', '.join(f'{rid}: {states[rid]}' for rid in rest[:3])}{', ...' if len(rest) > 3 else ''})"
    print(line, file=sys.stdout if n_complete == len(states) else sys.stderr)
    return 0 if n_complete == len(states) else 1


def cmd_campaign(args) -> int:
    from bench.campaign import run_campaign

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("campaign under torchrun: not supported (each worker is one process on one core)")
    return run_campaign(args.suite, args.preset, _overrides(args), work_dir=args.work_dir, done_dir=args.done_dir,
                        workers=args.workers, hours=args.hours, commit_every=args.commit_every,
                        dry_run=args.dry_run, allow_emulated_bf16=args.allow_emulated_bf16,
                        log=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True))


def cmd_wallclock(args) -> int:
    from bench.wallclock import run_sitting

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("wallclock under torchrun: not supported (a sitting is one process alone on the machine)")
    for flag in ("rounds", "steps", "predict_repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: {getattr(args, flag)}; at least 1")
    overrides = _overrides(args)
    archs = overrides.pop("arch").split(",") if "arch" in overrides else None
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds: {args.seeds!r}; a comma-separated list of integers, e.g. 0,1,2") from None
    out_dir = overrides.pop("out_dir", None)  # default: a new sitting folder under results/wallclock/
    return run_sitting(archs, seeds, args.preset, overrides, out_dir, allow_busy=args.allow_busy,
                       predict=not args.no_predict, rounds=args.rounds, steps=args.steps,
                       repeats=args.predict_repeats)


def cmd_speed(args) -> int:
    from bench import methods
    from bench.speed import measure, table, to_json

    for flag in ("rounds", "steps"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag}: {getattr(args, flag)}; at least 1")
    if args.bench_threads < 0:
        raise ConfigError(f"--bench-threads: {args.bench_threads}; 0 (torch's default) or more")
    overrides = _overrides(args)
    archs = overrides.pop("arch", "resnet20").split(",")
    # every arch, the method and the JSON's folder checked before the first measurement, not after it
    specs = [config.make_spec(args.preset or "quick", **{"method": methods.by_role("paper"), **overrides, "arch": arch})
             for arch in archs]
    if not methods.method_traits(specs[0].method)["grows"]:
        raise ConfigError(f"method: {specs[0].method!r} never grows, so there is no grown schedule to time; "
                          "give a growing method (python -m bench list)")
    if args.json:
        folder = Path(args.json).absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"--json {args.json}: {folder} is not a writable folder")
    reports = []
    for spec in specs:
        r = measure(spec, rounds=args.rounds, steps=args.steps, threads=args.bench_threads)
        print(table(r), flush=True)
        reports.append(r)
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(reports))
    return 0


def cmd_gate(args) -> int:
    """The CI regression gate on the speed-up numbers (also run by tests/regression)."""
    from bench import speed

    path = Path(speed.BASELINE_FILE)
    baseline = json.loads(path.read_text())
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise ConfigError(f"--data-dir {args.data_dir}: no such folder")
    costs = speed.cost_fractions()
    whole = None
    if args.data_dir:  # the whole run first, in a fresh process, before this one has stepped anything
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            whole = speed.whole_ratio(speed.train_whole(args.data_dir, tmp), speed.predict_whole(args.data_dir))
        print(f"whole run: training {whole['measured_seconds']:.1f} s, predicted from step times "
              f"{whole['predicted_seconds']:.1f} s: {whole['ratio']:.3f}x")
    reports = speed.ci_speed_reports()
    for r in reports.values():
        print(speed.table(r))
    if args.update:
        old = speed.find_entry(baseline, next(iter(reports.values())).fingerprint) or {}
        entry = speed.new_entry(reports, note=args.note, whole=whole)
        if whole is None and "whole_run" in old:  # re-measured without data: the stored whole-run ratio stays
            entry["whole_run"] = old["whole_run"]
        path.write_text(json.dumps(speed.update_baseline(baseline, costs, entry), indent=2) + "\n")
        print(f"wrote {path}: cost fractions and the entry of this hardware")
        return 0
    errors = speed.check_cost(costs, baseline["cost_fraction"]) + speed.gate(reports, baseline, out_dir=args.out_dir)
    if whole is not None:
        errors += speed.check_whole(whole, speed.find_entry(baseline, whole["fingerprint"]))
    for e in errors:
        print("FAIL " + e, file=sys.stderr)
    return 1 if errors else 0


def cmd_env(args) -> int:
    from bench import hardware

    if args.threads < 1 or args.batch_size < 1:
        raise ConfigError(f"--threads {args.threads}, --batch-size {args.batch_size}: each at least 1")
    device = torch_device(args.device)
    print("\n".join(hardware.describe(device)))
    if args.time:
        from bench.speed import precision_table

        print(f"\nfull-width training step, batch {args.batch_size}, {args.threads} thread(s), min of 5:", flush=True)
        print(precision_table(args.time.split(","), batch=args.batch_size, threads=args.threads))
    return 0


def torch_device(name: str):
    from bench.config import RunSpec
    from bench.hardware import resolve_device

    return resolve_device(RunSpec(device=name))


def cmd_list(args) -> int:
    from bench import methods
    from bench.models import REGISTRY

    print("methods (--method NAME; a method's options: --options.NAME VALUE):")
    for name in methods.METHODS:
        print(methods.describe(name))
    print("archs:   " + ", ".join(REGISTRY))
    print("datasets: " + ", ".join(config.choices("dataset")))
    print("presets: " + ", ".join(config.load_presets()))
    print("suites:  " + ", ".join(config.load_suites()))
    return 0


def cmd_explain(args) -> int:
    from bench.explain import explain

    for run_dir in args.run_dirs:
        print(explain(run_dir, predict=not args.no_predict, rounds=args.rounds, steps=args.steps), flush=True)
    return 0


def cmd_status(args) -> int:
    """Every run of the folder (and every run a sweep submitted that has no folder yet) with its state and,
    for submitted runs, its job's: one queue query for all of them."""
    from bench import launch
    from bench.records import LOCK, _read_lock, scan

    if not Path(args.out_dir).is_dir():
        raise RunDirError(f"--out-dir {args.out_dir}: no such folder")
    known = launch.recorded_jobs(args.out_dir)
    asked = [v["job_id"] for v in known.values() if v["launcher"] == "slurm"]
    asked += [str(h["job_id"]) for h in map(_read_lock, Path(args.out_dir).glob(f"*/{LOCK}")) if h.get("job_id")]
    queue = launch.queue_states(asked)  # None: no squeue here, so a lock of another host counts as live
    rows = scan(args.out_dir, queue)
    jobs = launch.job_states(args.out_dir, queue)
    on_disk = {r["run_id"] for r in rows}
    for rid, (job, state) in sorted(jobs.items()):  # submitted, no folder yet: queued, or ended before it began
        if rid not in on_disk:
            rows.append({"run_id": rid, "state": "queued" if state == "PENDING" else "starting" if state in launch.LIVE
                         else "not started",
                         "reason": "" if state in launch.LIVE else "its job ended before the run began: run the sweep "
                                                                  "again to resubmit it"})
    if not rows:
        print(f"{args.out_dir}: no runs")
        return 0
    for r in rows:
        extra = (f"acc {r['final_test_acc']:.4f}  {r['total_seconds']:.0f}s"
                 + (f" on {r['world_size']} processes" if r.get("world_size", 1) > 1 else "") if r["state"] == "complete"
                 else f"{r.get('epochs_done', 0)} epochs done" + (f" ({r['where']})" if r.get("where") else "")
                 if r["state"] in ("partial", "running")
                 else f"no checkpoint yet: the same command starts it over ({r.get('epochs_done', 0)} epochs in its "
                      "history, not saved)" if r["state"] == "empty"
                 else r.get("reason", ""))
        job = f"  [{_job_note(jobs[r['run_id']], r['state'])}]" if r["run_id"] in jobs else ""
        print(f"{r['state']:9s} {r['run_id']}  {extra}{job}")
    # every state listed is counted: the usual five always, any other (empty, queued) where it occurs
    usual = ("complete", "running", "partial", "failed", "corrupt")
    counts = {s: sum(r["state"] == s for r in rows) for s in (*usual, *sorted({r["state"] for r in rows} - set(usual)))}
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def _job_note(job: tuple[str, str], run_state: str) -> str:
    """A submitted run's job: its queue state, how Slurm's accounting says it ended, or (without accounting)
    how the run's own record says it ended."""
    name, state = job
    if state != "ENDED" or run_state == "not started":  # queued, running, or how accounting says it ended
        return f"{name}: {state}"
    told = {"complete": "ended, the run complete", "failed": "ended, the run failed (its reason: failed.json)"}
    return f"{name}: " + told.get(run_state, "ended without a result (cancelled, killed, out of memory or a lost node; "
                                            "run the sweep again to resubmit it)")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench", description="growbench: growing networks on one training loop")
    sub = p.add_subparsers(dest="command", required=True)
    epilog = ("Nested fields are flags too: --growth.NAME (the shared growth schedule) and --options.NAME (the "
              "method's own options); python -m bench list prints every method with its options, defaults and docs. "
              "Underscores and dashes are the same in flag names (--growth.growth_epochs 2,3 = --growth.growth-epochs 2,3).")
    r = sub.add_parser("run", help="one run from a preset and flags (resumes a partial run)", epilog=epilog)
    _add_spec_flags(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("sweep", help="a named suite of runs (complete runs skipped, partial ones resumed)",
                       epilog=epilog)
    s.add_argument("suite")
    s.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    s.add_argument("--launcher", choices=("inline", "local", "slurm"), default="inline",
                   help="inline: here, one after another; local: subprocesses through submitit; slurm: one job "
                        "array through submitit (needs growbench[cluster])")
    s.add_argument("--max-parallel", type=int, default=2, help="runs at once (local, slurm)")
    s.add_argument("--partition", default="", help="Slurm partition")
    s.add_argument("--tasks-per-node", type=int, default=1,
                   help="processes per run (local, slurm): above 1 each run trains with DDP, one rank per task")
    s.add_argument("--gpus-per-task", type=int, default=0, help="Slurm: GPUs per task (per rank)")
    s.add_argument("--cpus-per-task", type=int, default=2, help="Slurm: CPUs per task (per rank)")
    s.add_argument("--time-min", type=int, default=60, help="time limit per job, minutes (then requeued, resumed)")
    s.add_argument("--signal-delay-s", type=int, default=120, help="time-out signal this long before the limit")
    s.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="further sbatch option (KEY for a flag: --sbatch hold); job-name=X names the array")
    s.add_argument("--max-requeues", type=int, default=50, help="automatic requeues of one run's job on time-out "
                   "or preemption (local, slurm); other endings are resubmitted by running the sweep again")
    _add_spec_flags(s)
    s.set_defaults(fn=cmd_sweep)
    c = sub.add_parser("campaign", help="a suite's runs over days: one per core, resumable anywhere from a "
                       "committed work folder (README: long campaigns)", epilog=epilog)
    c.add_argument("suite")
    c.add_argument("--work-dir", default=None, help="unfinished runs, checkpoints included (default "
                   "results/campaigns/SUITE; commit or sync it)")
    c.add_argument("--done-dir", default=None, help="where finished runs go, without checkpoints "
                   "(default results/reference/PRESET)")
    c.add_argument("--workers", type=int, default=0, help="runs at once, one core and one thread each "
                   "(0: every core this process may use)")
    c.add_argument("--hours", type=float, default=0.0, help="stop the workers after this long (0: run to the end); "
                   "each keeps its last epoch's checkpoint")
    c.add_argument("--commit-every", type=float, default=0.0, metavar="MINUTES",
                   help="git-commit the two folders this often, after each finished run and at the end (0: never)")
    c.add_argument("--dry-run", action="store_true", help="list the runs and their state, train nothing")
    c.add_argument("--allow-emulated-bf16", action="store_true", help="train bf16 runs on a CPU that emulates bf16 "
                   "(3-30x slower; refused without this flag)")
    _add_spec_flags(c)
    c.set_defaults(fn=cmd_campaign)
    wc = sub.add_parser("wallclock", help="the wall-clock protocol: the wallclock suite's runs back to back, alone, "
                        "in one sitting, then the step-time prediction beside the measured speed-ups", epilog=epilog)
    wc.add_argument("--seeds", default="", help="comma-separated seeds of the suite (default: all)")
    wc.add_argument("--allow-busy", action="store_true", help="start on a busy machine (the runs are recorded as "
                    "not alone and left out of speed-ups)")
    wc.add_argument("--no-predict", action="store_true", help="skip the step-time prediction at the end")
    wc.add_argument("--rounds", type=int, default=3, help="rounds of the prediction's step-time measurement")
    wc.add_argument("--steps", type=int, default=10, help="steps per stage per round of the prediction")
    wc.add_argument("--predict-repeats", type=int, default=3, help="fresh processes the prediction is measured in; "
                    "their median is kept")
    _add_spec_flags(wc)
    wc.set_defaults(fn=cmd_wallclock)
    sp = sub.add_parser("speed", help="step time per stage width: measured vs FLOP-ideal speed-up of growth")
    sp.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the minimum is kept")
    sp.add_argument("--steps", type=int, default=10, help="training steps per stage per round")
    sp.add_argument("--bench-threads", type=int, default=1, help="CPU threads (0: torch's default)")
    sp.add_argument("--json", default=None, help="write the reports in pytest-benchmark's JSON shape")
    _add_spec_flags(sp)
    sp.set_defaults(fn=cmd_speed)
    gt = sub.add_parser("gate", help="CI regression gate: cost fractions and measured speed-ups vs the baseline file")
    gt.add_argument("--update", action="store_true",
                    help="measure and write this hardware's entry (and the cost fractions) into the baseline file")
    gt.add_argument("--note", default="", help="with --update: a note stored with the entry (where it was measured)")
    gt.add_argument("--out-dir", default="results", help="where a new hardware's entry is written when none matches")
    gt.add_argument("--data-dir", default="", help="CIFAR-10 (or its JPEG copy): also train a short grown run and "
                    "check its time against the step-time prediction (with --update: store that ratio)")
    gt.set_defaults(fn=cmd_gate)
    ex = sub.add_parser("explain", help="where a run's wall-clock went, beside the step times its schedule takes here")
    ex.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ex.add_argument("--no-predict", action="store_true", help="the account only, without timing the schedule here")
    ex.add_argument("--rounds", type=int, default=3, help="rounds of the step-time measurement (the minimum is kept)")
    ex.add_argument("--steps", type=int, default=10, help="steps per stage per round")
    ex.set_defaults(fn=cmd_explain)
    sub.add_parser("list", help="methods, archs, datasets, presets, suites").set_defaults(fn=cmd_list)
    ev = sub.add_parser("env", help="the device, its native precisions and what the auto settings resolve to")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--time", metavar="ARCHS", default="", help="also time a CPU training step per precision and "
                    "memory format for these archs (e.g. resnet20,vgg11)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--threads", type=int, default=1)
    ev.set_defaults(fn=cmd_env)
    st = sub.add_parser("status", help="what a results directory holds")
    st.add_argument("--out-dir", default="results")
    st.set_defaults(fn=cmd_status)
    for command in sub.choices.values():
        # no prefixes of flags: `gate --updat` would rewrite the baseline file; a typo gets a suggestion instead
        command.allow_abbrev = False
    p.commands = sub.choices  # for _unrecognized: each command's own flags
    return p


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors (a bad choice, a flag without its value, no command) in one line with the way to help,
    not its usage dump; subcommands' parsers are made of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def _unrecognized(p: argparse.ArgumentParser, command: str, extra: list[str]) -> str:
    """One line for mistyped flags, each with its closest real flag: --help hides the nested ones."""
    known = [o for a in p.commands[command]._actions for o in a.option_strings]
    words = []
    for e in extra:
        close = difflib.get_close_matches(e.partition("=")[0], known, n=1) if e.startswith("-") else []
        words.append(e + (f" (did you mean {close[0]}?)" if close else ""))
    return f"python -m bench {command}: unrecognized arguments: {' '.join(words)}; see python -m bench {command} --help"


# what a user can cause ends in one line: (exception, prefix, exit status), first match wins
ERRORS = ((ConfigError, "config error: ", 2), (DataError, "data error: ", 1), (RunDirError, "run directory error: ", 1),
          (Diverged, "diverged: ", 1), (LaunchError, "launch error: ", 1), (Interrupted, "", 130))


def main(argv=None) -> int:
    p = parser()
    args, extra = p.parse_known_args([_dashed(a) for a in (sys.argv[1:] if argv is None else argv)])
    if extra:
        print(_unrecognized(p, args.command, extra), file=sys.stderr)
        return 2
    try:
        return args.fn(args)
    except (*(e for e, _, _ in ERRORS), KeyboardInterrupt, OSError) as e:
        for kind, prefix, status in ERRORS:
            if isinstance(e, kind):
                if isinstance(e, KeyboardInterrupt):  # Interrupted: a second Ctrl-C ends it quietly
                    from bench.train import quiet_second_interrupt

                    quiet_second_interrupt()
                print(f"{prefix}{e}", file=sys.stderr)
                return status
        if isinstance(e, KeyboardInterrupt):
            from bench.train import quiet_second_interrupt

            quiet_second_interrupt()
            print("interrupted", file=sys.stderr)
            return 130
        if e.errno not in WRITE_ERRNOS:
            raise
        print(f"write error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1


def closed_pipe_safe(main) -> int:
    """``main()``'s status; when the reader of stdout went away (``bench status | head``), 0 and no traceback:
    the reader took what it wanted. The rest of the output goes to /dev/null, so the interpreter's flush at
    exit does not raise again."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    """The console script (``growbench``): as ``python -m bench``."""
    import runpy

    runpy.run_module("bench", run_name="__main__")


if __name__ == "__main__":
    sys.exit(main())
