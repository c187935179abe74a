"""The one training loop every method runs on.

start_or_resume                   model, optimizer, method (growth/api.py) and LoopState, new or from checkpoint.pt
for each epoch:
    grow_if_due                   method.before_epoch(ctx) may grow the model; the optimizer is then rebuilt
                                  over the new parameters, state carried (old slice copied, new zero) or reset
    prepare_epoch                 method.lr_multipliers(model, epoch), per element (LRA); batch size; format
    train_one_epoch               lr = schedule(epoch progress), assigned to the param groups every step
    evaluate_epoch, account       test accuracy; FLOPs (cached per width) and time; the history row
    save_checkpoint
build_result                      result.json, written last, atomically

Under torchrun every rank runs this loop on its rows of each batch (bench/distributed.py says what
changes: DDP re-wrapped after growth, growth from whole batches, a replica check every epoch, rank 0
the only writer).
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench import hardware, methods
from bench.config import (SCHEMA_VERSION, ConfigError, RunSpec, config_hash, flat_config, run_id, spec_from_dict,
                          spec_to_dict)
from bench.data import NUM_CLASSES, DataError, image_size, make_loaders
from bench.distributed import SOLO, World
from bench.flops import CONVENTION, step_flops
from bench.hardware import resolve_device
from bench.models import build
from bench.optim import SGD, make_optimizer, rebuild_optimizer
from bench.records import CONFIG, RESULT, ForeignCheckpoint, ForeignResult, ReaderRunDir, RunDir, RunDirError, environment
from bench.timing import WARM_STEPS, SectionTimer, accounting, synchronize
from bench.tracking import make_tracker
from growth.api import GrowthContext, GrowthEvent, Method, Multipliers
from growth.widths import param_count, widths_of

GROWTH_STREAM = 1  # data stream for growth signals (TensorLoader.iterate)


def lr_at(spec: RunSpec, progress: float) -> float:
    """Learning rate at ``progress`` epochs into training (a float: epoch + step / steps_per_epoch).

    A pure function of the position in training, so growth (new parameters, a new optimizer, a new
    batch size) never breaks the schedule."""
    if progress < spec.warmup_epochs:
        return spec.lr * progress / spec.warmup_epochs
    if spec.lr_schedule == "cosine":
        t = (progress - spec.warmup_epochs) / (spec.epochs - spec.warmup_epochs)
        return spec.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return spec.lr * spec.lr_decay ** sum(progress >= m for m in spec.lr_decay_epochs)


def setup_runtime(spec: RunSpec, log=print, name: str = "") -> int:
    """Threads and determinism for a run; returns the CPU thread count (``threads`` 0: the cores this process
    may use that no other process keeps busy). A machine already busy is said at the start, with the thread
    count that fits what is free."""
    cores = hardware.allowed_cores()
    busy = hardware.busy_cores(cores) if resolve_device(spec).type == "cpu" else 0.0
    free = hardware.threads_default(busy)
    threads = spec.threads or free
    if busy >= 0.5:
        log(f"[{name}] the machine is busy: other processes keep about {busy:.1f} of the {len(cores)} core(s) this "
            f"run may use busy; it trains on {threads} thread(s)"
            + (f" (--threads {free} would fit what is free)" if threads > free else "")
            + "; its timings will not compare with runs made alone")
    torch.set_num_threads(threads)
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    return threads


def autocast(spec: RunSpec, device: torch.device):
    if spec.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def use_channels_last(spec: RunSpec, widths: dict[str, int]) -> bool:
    """channels_last for this width configuration (``channels_last_align``: only at aligned widths)."""
    align = spec.channels_last_align
    return spec.channels_last and (align == 0 or all(w % align == 0 for w in widths.values()))


def place(model: nn.Module, spec: RunSpec, device: torch.device) -> nn.Module:
    """Move ``model`` to the device in the memory format its widths call for."""
    model = model.to(device)
    cl = use_channels_last(spec, widths_of(model))
    return model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)


def compile_model(model: nn.Module, spec: RunSpec):
    if not spec.compile:
        return model
    import torch._dynamo

    hardware.separate_compile_cache()
    # every growth is a new shape: keep the recompile limit above the number of stages, or Dynamo
    # silently falls back to eager after it
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
    return torch.compile(model)


@torch.no_grad()
def evaluate(model: nn.Module, loader, spec: RunSpec, device: torch.device,
             world: World = SOLO) -> tuple[float, float]:
    """Test loss and accuracy (a language model's: per character, loss in nats); each rank of a multi-process
    run evaluates its rows, then they sum."""
    model.eval()
    loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in loader:
        if len(y) == 0:  # a last batch smaller than the number of ranks
            continue
        with autocast(spec, device):
            out = model(x)
        loss += F.cross_entropy(out.float().flatten(0, -2), y.flatten(), reduction="sum")
        correct += (out.argmax(-1) == y).sum()
        n += y.numel()  # a language model scores every position
    loss, correct, n = world.sum([loss.item(), correct.item(), n], device)
    return loss / n, correct / n


def eval_flops(spec: RunSpec, widths: dict, n: int, num_classes: int, image_size: int) -> int:
    full, rest = divmod(n, spec.eval_batch_size)
    f = full * step_flops(spec.arch, widths, num_classes, image_size, spec.eval_batch_size, train=False)
    return f + (step_flops(spec.arch, widths, num_classes, image_size, rest, train=False) if rest else 0)


def set_multipliers(optimizer: SGD, model: nn.Module, method: Method, epoch: int) -> dict:
    """The method's LR multipliers for ``epoch`` into the optimizer; returns what they add to the
    history row."""
    mults = method.lr_multipliers(model, epoch)
    record = {}
    if isinstance(mults, Multipliers):
        mults, record = mults.by_param, mults.record
    params = dict(model.named_parameters())
    optimizer.multipliers = {params[k]: v for k, v in (mults or {}).items()}
    return record


class Diverged(RuntimeError):
    """The run's numbers went non-finite or exploded; the message names the epoch and step, or the growth."""


# an epoch whose mean training loss is above EXPLODED x ln(classes), ten times the loss of a uniform guess,
# has exploded: no run that trains recovers from there (--lr 50 on ResNet-20 reaches 5e11 in one epoch)
EXPLODED = 10.0


def check_exploded(train_loss: float, test_loss: float, epoch: int, num_classes: int) -> None:
    """Stop a run whose finite numbers have blown up as diverged, not record it complete."""
    bound = EXPLODED * math.log(num_classes)
    if train_loss > bound:
        raise Diverged(f"training loss {train_loss:.3g} at epoch {epoch + 1} is above {bound:.3g} "
                       f"({EXPLODED:g} x ln {num_classes}, {EXPLODED:g} times a uniform guess's): exploded")
    if not math.isfinite(test_loss):
        raise Diverged(f"test loss not finite at epoch {epoch + 1} (training loss {train_loss:.3g})")


def train_epoch(step_model, model: nn.Module, optimizer: SGD, loader, spec: RunSpec, epoch: int,
                device: torch.device, bar=None, step_hook=None, time_first_step: bool = False, world: World = SOLO,
                warm: list | None = None) -> tuple[float, float, float | None]:
    """One epoch of training steps; returns (mean training loss, last LR, seconds of the first step
    if ``time_first_step``, else None: a compiling step); appends the seconds of its first WARM_STEPS steps
    to ``warm`` (the run's time accounting). ``step_model`` is ``model`` or its compiled
    wrapper. Each step's loss is stored on the device (no host sync per step, and no more work than
    summing it); at the end the first non-finite one raises Diverged. Several processes: the mean over
    the ranks (each rank's loss is the mean over its rows of the global batch)."""
    model.train()
    steps = len(loader)
    losses = torch.empty(steps, device=device)
    lr = lr_at(spec, epoch)
    first = None
    t_first = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        lr = lr_at(spec, epoch + i / steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if step_hook is not None:
            step_hook(epoch + i / steps)
        with autocast(spec, device):
            loss = F.cross_entropy(step_model(x).flatten(0, -2), y.flatten(), label_smoothing=spec.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[i] = loss.detach()
        if time_first_step and i == 0:
            synchronize(device)
            first = time.perf_counter() - t_first
        if warm is not None and i == min(WARM_STEPS, steps) - 1:
            synchronize(device)
            warm.append(time.perf_counter() - t_first)
        if bar is not None:
            bar.update()
    mean = world.mean(losses.mean().item(), device)
    if not math.isfinite(mean):
        if world.several and all(math.isfinite(v) for v in losses.tolist()):
            raise Diverged(f"training loss not finite at epoch {epoch + 1} on another rank")
        bad = int((~torch.isfinite(losses)).nonzero()[0])
        raise Diverged(f"training loss not finite at epoch {epoch + 1}, step {bad + 1} of {steps} "
                       f"(lr {lr_at(spec, epoch + bad / steps):.4g})")
    return mean, lr, first


def grow(method, ctx):
    """The method's growth step; a signal or a grown weight that is not finite stops the run as
    diverged, naming the epoch, instead of a linear-algebra traceback."""
    try:
        event = method.before_epoch(ctx)
    except torch.linalg.LinAlgError as e:
        raise Diverged(f"growth before epoch {ctx.epoch + 1} failed: {str(e).splitlines()[0]}") from None
    if event is not None and not all(torch.isfinite(p).all() for p in ctx.model.parameters()):
        raise Diverged(f"growth before epoch {ctx.epoch + 1} produced non-finite weights")
    return event


LOADED_SHARE = 0.85  # a run got less than this share of its threads' CPU time: another process competed


OTHERS_LOADED = 0.5  # cores other processes kept busy in an epoch that make it "loaded"


def loaded(load: dict) -> bool:
    """An epoch's load record says another process competed: by the cores other processes kept busy where
    recorded (the own CPU share of several threads falls alone too, in the serial parts), else by the share."""
    if load.get("others_cores") is not None:
        return load["others_cores"] >= OTHERS_LOADED
    return load.get("cpu_share") is not None and load["cpu_share"] < LOADED_SHARE


def machine_load(wall: float, cpu: float, threads: int, before: tuple[float, float] | None = None,
                 after: tuple[float, float] | None = None) -> dict:
    """How busy the machine was during an epoch, so that timings taken under load can be flagged:
    the 1-minute load average against the core count; ``cpu_share``, the CPU seconds this process
    got per wall second and thread (near 1 alone on the cores it uses, about 1/2 when another busy
    process shares them); ``others_cores``, how many cores other processes or the hypervisor kept busy on
    the whole machine, and ``steal_cores``, the hypervisor's part of it (``before``, ``after``: the machine's
    busy and steal CPU seconds at the epoch's ends, hardware.machine_cpu_seconds; a process on another core
    shares the memory bus and the last-level cache, and stolen time stops this run's threads, so a run timed
    "alone" needs both near 0)."""
    load = {"loadavg_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
            "cpu_share": round(cpu / (wall * threads), 3) if wall > 0 else None, "others_cores": None}
    if before is not None and after is not None and wall > 0:
        busy, steal = (a - b for a, b in zip(after, before))
        load["others_cores"] = round(max(0.0, busy - cpu) / wall, 3)
        load["steal_cores"] = round(steal / wall, 3)
    return load


def planned_costs(live: "Live") -> list[int]:
    """Each epoch's training FLOPs as planned (the method's widths and batch size of that epoch): the ETA's
    weights, since a growing run's later epochs cost more than its first ones."""
    spec, schedule = live.spec, getattr(live.method, "schedule", None)
    costs = []
    for e in range(spec.epochs):
        widths = schedule.widths_at(e) if live.method.grows and schedule is not None else live.method.target_widths()
        b = live.method.batch_size(e)
        costs.append(max(1, live.train_loader.size // b) * step_flops(spec.arch, widths, live.num_classes,
                                                                      live.image_size, b))
    return costs


def pace(costs: list[int], first: int, epoch: int, seconds: float) -> str:
    """"12.5 min elapsed, about 8.0 min left": this process's time for epochs first..epoch, and the rest
    at the same seconds per planned FLOP."""
    done, left = sum(costs[first:epoch + 1]), sum(costs[epoch + 1:])
    return f"{seconds / 60:.1f} min elapsed, about {seconds * left / done / 60:.1f} min left"


def _progress_enabled(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where and how to resume."""


def check_config(rd: RunDir, spec: RunSpec) -> None:
    """Refuse a run directory whose config.json was made for another config (copied or edited into
    place): resuming it would train one config and record another."""
    rd.check_files()
    if not (rd.path / CONFIG).is_file():
        return
    try:
        stored = rd.config()
        if not isinstance(stored, dict):
            raise ConfigError(f"not a run's config (a JSON {type(stored).__name__})")
        stored = spec_from_dict(stored)
    except ConfigError as e:
        raise RunDirError(f"{rd.path / CONFIG}: {e}") from None
    if config_hash(stored) != config_hash(spec):
        a, b = flat_config(stored), flat_config(spec)
        diff = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise RunDirError(f"{rd.path / CONFIG}: made for another config ({'; '.join(diff)}); not resumed")


def run(spec: RunSpec, progress: bool | None = None, log=print) -> dict:
    """Train one run to completion (resuming a partial one) and return its result. Under torchrun
    (WORLD_SIZE > 1) every rank calls it; rank 0 alone logs and writes (bench/distributed.py)."""
    spec = hardware.resolve(spec)
    world = World.from_env(resolve_device(spec).type)
    if not world.main:
        log = _silent
    path = Path(spec.out_dir) / run_id(spec)
    rd = RunDir(path) if world.main else ReaderRunDir(path)
    check_out_dir(spec.out_dir, path.name)
    check_config(rd, spec)
    if rd.complete:
        result = _complete(rd, log, world)
        if result is not None:
            return result
    created = [p for p in (rd.path, rd.path.parent) if not p.exists()]
    rd.lock(log)
    try:
        # decided again now that the lock is ours: between the look above and the lock another process
        # may have finished this run (or made its folder), and it must not be trained again
        check_config(rd, spec)
        if rd.complete:
            result = _complete(rd, log, world)
            if result is not None:
                return result
        return _run(spec, rd, progress, log, world)
    except (ConfigError, DataError):
        if rd.path in created and world.main:  # refused before training: leave nothing behind
            rd.unlock()
            shutil.rmtree(rd.path, ignore_errors=True)
            if rd.path.parent in created and not any(rd.path.parent.iterdir()):
                rd.path.parent.rmdir()
        raise
    except KeyboardInterrupt:
        quiet_second_interrupt()
        saved = rd.saved_epoch  # the epochs a checkpoint holds, not the history's rows (written before it)
        raise Interrupted(f"[{rd.path.name}] interrupted in epoch {saved + 1}/{spec.epochs}; "
                          + (f"{'epoch 1 is' if saved == 1 else f'epochs 1-{saved} are'} saved: run the same "
                             "command to resume" if saved
                             else "nothing saved yet: the same command starts it over")) from None
    except Exception as e:
        if rd.path.is_dir() and not isinstance(e, RunDirError):  # a folder refused is not a run that failed
            try:
                rd.write_failure(traceback.format_exc(), reason=f"{type(e).__name__}: {e}")
            except OSError:  # a full disk: the error itself is what the user must see
                pass
        raise
    finally:
        rd.unlock()


def _complete(rd: RunDir, log, world: World = SOLO) -> dict | None:
    """The result of a complete run; None when result.json is unreadable (set aside, to be rebuilt). A run
    complete with another process count is another computation (BatchNorm statistics are per process):
    refused, not taken for this one."""
    try:
        result = rd.result()
    except ForeignResult:
        raise
    except RunDirError as e:
        log(f"[{rd.path.name}] {e}; moved to {rd.set_aside(rd.path / RESULT).name}, rebuilt from the checkpoint")
        return None
    if result.get("world_size", 1) != world.size:
        raise RunDirError(f"{rd.path}: complete with {result.get('world_size', 1)} process(es), and this run "
                          f"has {world.size}: BatchNorm statistics are per process, so it is another computation; "
                          "train it into another --out-dir")
    log(f"[{rd.path.name}] complete, skipped")
    return result


def quiet_second_interrupt() -> None:
    """After a first Ctrl-C the process is on its way out (cleanup, interpreter shutdown): a second one
    ends it at once, quietly, with 130, instead of a traceback from whatever ran at that moment."""
    import signal

    try:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    except ValueError:  # not the main thread: its Ctrl-C is the main thread's to handle
        pass


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def check_fits_data(spec: RunSpec, n_train: int) -> None:
    """Batch-size adaptation's largest batch and a method's growth batch (options.samples) fit the training
    set: else an epoch has no step, or the method silently uses fewer images than its config records."""
    if methods.method_traits(spec.method)["grows"] and spec.growth.batch_adapt:
        from bench.flops import batch_sizes_of, schedule_of

        biggest = max(batch_sizes_of(spec, schedule_of(spec)))
        if biggest > n_train:
            raise ConfigError(f"growth.batch_adapt: the adapted batch reaches {biggest} images, more than the {n_train} "
                              "training images (no step in such an epoch); lower --batch-size or "
                              "--growth.batch-max-factor, or train on more images")
    samples = getattr(spec.options, "samples", None)
    if isinstance(samples, int) and samples > n_train:
        raise ConfigError(f"options.samples: {samples} images asked for, and the training set holds {n_train}")


def check_out_dir(out_dir: str, run_name: str = "x" * 64) -> None:
    """The results folder can hold ``run_name``'s folder: not a file, not a broken or looping link, each name
    and the whole path within the system's limits, and its nearest existing folder takes a new folder (tried:
    a folder made and removed at once, since permission bits say nothing to root, nor about /proc)."""
    import errno
    import tempfile

    out = Path(out_dir)
    try:
        os.stat(out)
    except FileNotFoundError:
        if out.is_symlink():
            raise RunDirError(f"out_dir {out}: a link to {os.readlink(out)}, which does not exist") from None
    except OSError as e:  # a link loop, a name too long, a file on the way
        why = {errno.ELOOP: "a loop of symbolic links", errno.ENAMETOOLONG: "name too long",
               errno.ENOTDIR: "a file stands where a folder should"}.get(e.errno, e.strerror)
        raise RunDirError(f"out_dir {_short(out)}: {why}") from None
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out_dir {out}: is a file, not a folder")
    probe = out if out.is_dir() else next((p for p in out.parents if p.is_dir()), Path("."))
    new_parts = (out / run_name).absolute().relative_to(probe.absolute()).parts
    name_max = os.pathconf(probe, "PC_NAME_MAX")
    long = [n for n in new_parts if len(os.fsencode(n)) > name_max]
    if long or len(os.fsencode(str((out / run_name).absolute()))) >= os.pathconf(probe, "PC_PATH_MAX"):
        raise RunDirError(f"out_dir {_short(out)}: name too long (at most {name_max} bytes a name, "
                          f"{os.pathconf(probe, 'PC_PATH_MAX')} in all, run folder included)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".growbench-probe-", dir=probe))
    except OSError as e:
        raise RunDirError(f"out_dir {out}: {probe} does not take new folders ({e.strerror})") from None


def _short(path: Path, keep: int = 80) -> str:
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-keep // 2:]} ({len(text)} characters)"


@dataclass
class LoopState:
    """What the loop carries from epoch to epoch; its dict form is the checkpoint's ``loop`` entry."""
    epoch: int = 0  # epochs completed
    stage: int = 0  # growth steps taken
    history: list = field(default_factory=list)  # one row per completed epoch (history.jsonl)
    times: dict = field(default_factory=dict)  # seconds per timed section
    train_flops: int = 0
    eval_flops: int = 0
    growth_flops: int = 0  # growth work the FLOP counter does not see (GrowthEvent.extra_flops)
    width_history: list = field(default_factory=list)  # {"epoch", "widths"} at the start and after each growth
    resumes: list = field(default_factory=list)  # the epochs (completed) at which the run was resumed
    # where each stretch of epochs ran: {"from_epoch", "host", "machine_id", "fingerprint"}, a new entry
    # whenever a start or resume finds another machine (its times then mix machines: no speed-up)
    machines: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"version": LOOP_STATE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "checkpoint") -> "LoopState":
        """A checkpoint's loop state; version 1 (no ``version`` key) had the same fields as a dict."""
        version = d.get("version", 1)
        if version > LOOP_STATE_VERSION:
            raise RunDirError(f"{where}: loop state version {version} is newer than this growbench's "
                              f"({LOOP_STATE_VERSION}); update growbench to resume it")
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {"resumes": [], "machines": [], **d}  # added in versions 3 and 4
        missing = sorted(fields - set(d))
        if missing:
            raise RunDirError(f"{where}: loop state (version {version}) lacks {', '.join(missing)}; not resumable")
        return cls(**{k: d[k] for k in fields})


LOOP_STATE_VERSION = 4  # 1: the same fields as an untyped dict without a version; 3: resumes; 4: machines


def note_machine(st: LoopState, mode: dict, log, name: str) -> None:
    """Record the machine that trains the epochs from now on, when it is not the last one recorded
    (a checkpoint of version 3 or older recorded none: its earlier machines are unknown)."""
    here = {"host": socket.gethostname(), "machine_id": machine_id(),
            "fingerprint": hardware.fingerprint_key(mode["fingerprint"])}
    last = st.machines[-1] if st.machines else None
    if last is not None and all(last.get(k) == v for k, v in here.items()):
        return
    if st.epoch and last is None:
        st.machines.append({"from_epoch": 0, "host": None, "machine_id": None, "fingerprint": None})
    if st.epoch:
        log(f"[{name}] NOTE: resumed on another machine than epochs {last['from_epoch'] + 1 if last else 1}-{st.epoch} "
            f"ran on ({here['fingerprint'] if last is None or last['fingerprint'] != here['fingerprint'] else here['host']}); "
            "its times mix machines and are left out of speed-ups")
    st.machines.append({"from_epoch": st.epoch, **here})


def machine_id() -> str | None:
    """The OS's id of this installation (/etc/machine-id), which tells two hosts of one name apart."""
    try:
        return Path("/etc/machine-id").read_text().strip() or None
    except OSError:
        return None


@dataclass
class Live:
    """The run's objects while it trains: what growth replaces (model, optimizer) and what it reads."""
    spec: RunSpec
    device: torch.device
    method: Method
    model: nn.Module
    step_model: nn.Module  # the model or its compiled wrapper
    optimizer: SGD
    train_loader: object
    test_loader: object
    growth_gen: torch.Generator
    timer: SectionTimer
    num_classes: int
    image_size: int
    world: World = SOLO
    compile_pending: bool = False  # the next step compiles: its time goes to its own column
    record: dict = field(default_factory=dict)  # what the LR multipliers add to the history row


def _run(spec: RunSpec, rd: RunDir, progress: bool | None, log, world: World = SOLO) -> dict:
    """Set up (or resume), then per epoch: grow if due, train, evaluate, account, checkpoint."""
    t_setup = time.perf_counter()
    threads = setup_runtime(spec, log, rd.path.name)
    device = world.device(resolve_device(spec))
    mode = hardware.explain(spec, device)
    log(f"[{rd.path.name}] {device}, {threads} thread(s){'' if spec.threads else ' (the cores it may use; --threads N sets)'}"
        f"{f' x {world.size} processes' if world.several else ''}, "
        f"{mode['label']}; precision {mode['precision']}: {mode['precision_reason']}")
    # before anything is written: under torchrun a rank's error ends the others before they clean up
    if spec.batch_size % world.size:
        raise ConfigError(f"batch_size: {spec.batch_size} does not split over {world.size} processes "
                          "(the global batch must be a multiple of the number of processes)")
    train_loader, test_loader, data_source = make_loaders(spec, device, world.rank, world.size)
    if len(train_loader) == 0:
        raise ConfigError(f"batch_size: {spec.batch_size} is more than the {train_loader.size} training images: "
                          "no training step in an epoch")
    check_fits_data(spec, train_loader.size)
    if not world.main:  # rank 0 first: it may move a corrupt checkpoint aside before the others read
        world.barrier()
    live, st = start_or_resume(spec, rd, device, train_loader, test_loader, log, world)
    if world.main:
        world.barrier()
    uneven = sorted({b for b in map(live.method.batch_size, range(spec.epochs)) if b % world.size})
    if uneven:  # batch-size adaptation's sizes too: refused now, not at the stage that reaches them
        raise ConfigError(f"batch sizes {uneven} of this run do not split over {world.size} processes")
    rewrap(live)
    note_machine(st, mode, log, rd.path.name)
    tracker = make_tracker(spec.tracker if world.main else "none", rd.path, st.epoch)
    setup_seconds = time.perf_counter() - t_setup
    show = _progress_enabled(progress)
    costs, first, t_loop, warned = planned_costs(live), st.epoch, time.perf_counter(), False

    for epoch in range(st.epoch, spec.epochs):
        t_epoch, cpu_epoch, machine_epoch = time.perf_counter(), time.process_time(), hardware.machine_cpu_seconds()
        event = grow_if_due(live, st, epoch)
        with live.timer.section("data"):
            prepare_epoch(live, epoch)
        train_loss, lr = train_one_epoch(live, epoch, show)
        test_loss, test_acc, layers = evaluate_epoch(live, st)
        check_exploded(train_loss, test_loss, epoch, live.num_classes)
        st.epoch = epoch + 1
        live.timer.totals["wall"] += time.perf_counter() - t_epoch  # the epoch without its checkpoint write
        row = account(live, st, epoch, event, train_loss, lr, test_loss, test_acc)
        row["load"] = machine_load(time.perf_counter() - t_epoch, time.process_time() - cpu_epoch, threads,
                                   machine_epoch, hardware.machine_cpu_seconds())
        row["layers"] = layers
        if world.several:
            check_replicas(live, epoch)
            row["replicas_identical"] = True  # every parameter and buffer equal to rank 0's (else it raised)
        st.history.append(row)
        rd.append_history(row)
        tracker.log_epoch(row)
        if (spec.checkpoint or epoch + 1 == spec.epochs) and world.main:
            save_checkpoint(live, st, rd)
        st.times = live.timer.as_dict()
        log(f"[{rd.path.name}] epoch {epoch + 1}/{spec.epochs} stage {st.stage} loss {train_loss:.4f} "
            f"test_acc {test_acc:.4f} lr {lr:.4g} ({time.perf_counter() - t_epoch:.1f}s; "
            f"{pace(costs, first, epoch, time.perf_counter() - t_loop)})")
        if loaded(row["load"]) and not warned:
            warned = True
            log(f"[{rd.path.name}] the machine is loaded: {hardware.competition(row['load'], threads)} in that epoch, so its "
                "timings will not mean much (on a busy machine --threads 1 is better)")

    tracker.close()
    result = build_result(live, st, data_source, mode, setup_seconds)
    rd.write_result(result)
    return result


def start_or_resume(spec: RunSpec, rd: RunDir, device, train_loader, test_loader, log,
                    world: World = SOLO) -> tuple[Live, LoopState]:
    """The model, optimizer, method and loop state: from the checkpoint of a partial run, else new."""
    num_classes, size = NUM_CLASSES[spec.dataset], image_size(spec)
    method = methods.create(spec)
    growth_gen = torch.Generator()
    ck = None
    if rd.partial:
        try:
            ck = rd.load_checkpoint(log)
        except ForeignCheckpoint:
            raise
        except RunDirError as e:
            log(f"[{rd.path.name}] {e}; starting over")
    if ck is not None:
        st = LoopState.from_dict(ck["loop"], where=str(rd.path / "checkpoint.pt"))
        model = build(spec.arch, num_classes, widths=ck["widths"], image_size=size)
        model.load_state_dict(ck["model"])
        method.load_state_dict(ck["method"])
        growth_gen.set_state(ck["rng"]["growth"])
        torch.set_rng_state(ck["rng"]["torch"])
        rd.rewrite_history(st.history)  # drop any row written after the checkpoint
        st.resumes.append(st.epoch)
        log(f"[{rd.path.name}] resuming at epoch {st.epoch}/{spec.epochs}")
        if ck.get("world_size", 1) != world.size:
            log(f"[{rd.path.name}] NOTE: trained so far by {ck.get('world_size', 1)} process(es), now {world.size}: "
                "BatchNorm statistics are per process, so the rest differs from a run with one count throughout")
    else:
        torch.manual_seed(spec.seed)
        growth_gen.manual_seed(spec.seed + 1_000_003)
        model = build(spec.arch, num_classes, widths=method.start_widths(), image_size=size)
        st = LoopState(width_history=[{"epoch": 0, "widths": widths_of(model)}])
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_config(spec_to_dict(spec))
        rd.rewrite_history([])
    model = place(model, spec, device)
    optimizer = make_optimizer(spec, model.parameters())
    if ck is not None:
        optimizer.load_state_dict(ck["optimizer"])
    # step_model (DDP, compiled) is set by rewrap once every rank is here: DDP's constructor is a collective
    live = Live(spec, device, method, model, model, optimizer, train_loader, test_loader, growth_gen,
                SectionTimer(device, st.times), num_classes, size, world, compile_pending=spec.compile)
    return live, st


def grow_if_due(live: Live, st: LoopState, epoch: int) -> GrowthEvent | None:
    """The method's growth step before ``epoch``; after a growth the optimizer is rebuilt over the new
    parameters (state carried or reset) and the model recompiled."""
    spec = live.spec
    before = dict(live.model.named_parameters())
    live.world.sync_buffers(live.model)  # growth signals read BN statistics: rank 0's on every rank
    # growth signals from whole global batches: every rank makes the same choice (bench/distributed.py)
    ctx = GrowthContext(live.model, epoch, live.growth_gen,
                        lambda: live.train_loader.iterate(epoch, GROWTH_STREAM, shard=False), live.device,
                        steps_per_epoch=len(live.train_loader), autocast=lambda: autocast(spec, live.device))
    with live.timer.section("growth"):
        event = grow(live.method, ctx)
        if event is not None:
            live.model = place(ctx.model, spec, live.device)
            live.optimizer = rebuild_optimizer(live.optimizer, before, live.model, event.optimizer_policy)
            rewrap(live)
            live.compile_pending = spec.compile
            st.stage += 1
            st.growth_flops += int(event.extra_flops)
            st.width_history.append({"epoch": epoch, "widths": widths_of(live.model)})
    return event


def rewrap(live: Live) -> None:
    """The model to step: in a new DDP (several processes) and compiled (``compile``), at the start and
    after every growth. DDP hooks the parameters that exist when it is built: kept after a growth, the
    old wrapper would never all-reduce the new ones."""
    if not live.world.same(widths_of(live.model)):
        raise RuntimeError(f"growth gave different widths on different ranks (rank {live.world.rank}: "
                           f"{widths_of(live.model)}); a grower's choice depends on something rank-local")
    live.step_model = compile_model(live.world.wrap(live.model), live.spec)


def check_replicas(live: Live, epoch: int) -> None:
    """Several processes: every parameter and buffer equal to rank 0's, or the run stops here."""
    bad = live.world.first_difference(live.model)
    if bad is not None:
        raise RuntimeError(f"ranks diverged after epoch {epoch + 1}: {bad} differs from rank 0's")


def prepare_epoch(live: Live, epoch: int) -> None:
    """LR multipliers, batch size and memory format for this epoch's width."""
    live.record = set_multipliers(live.optimizer, live.model, live.method, epoch)
    cl = use_channels_last(live.spec, widths_of(live.model))
    live.train_loader.start_epoch(epoch, batch_size=live.method.batch_size(epoch), channels_last=cl)
    live.test_loader.start_epoch(0, channels_last=cl)


def train_one_epoch(live: Live, epoch: int, show: bool) -> tuple[float, float]:
    """The epoch's training steps, timed; the first step after a (re)compile is timed as ``compile``."""
    bar = None
    if show:
        from tqdm import tqdm
        bar = tqdm(total=len(live.train_loader), desc=f"epoch {epoch + 1}/{live.spec.epochs}", leave=False,
                   file=sys.stderr)
    def every_step(progress: float):
        live.method.before_step(live.model, progress)
        if live.method.multipliers_every_step:  # LRA recomputed before every step (lra_every: step)
            live.record = set_multipliers(live.optimizer, live.model, live.method, epoch)

    step_hook = every_step
    warm: list[float] = []
    with live.timer.section("train"):
        train_loss, lr, first = train_epoch(live.step_model, live.model, live.optimizer, live.train_loader, live.spec,
                                            epoch, live.device, bar, step_hook, time_first_step=live.compile_pending,
                                            world=live.world, warm=warm)
    # a part of "train", not beside it: the first steps of every epoch (bench/explain.py compares them with the rest)
    live.timer.totals["train_warm"] += warm[0] - (first or 0.0)
    if first is not None:
        live.timer.move("train", "compile", first)
        live.compile_pending = False
    if bar is not None:
        bar.close()
    return train_loss, lr


def evaluate_epoch(live: Live, st: LoopState) -> tuple[float, float, dict]:
    """Test loss and accuracy, and each layer's weight std and pre-activation variance (report F8)."""
    with live.timer.section("eval"):
        live.world.sync_buffers(live.model)  # BN statistics: rank 0's on every rank
        test_loss, test_acc = evaluate(live.model, live.test_loader, live.spec, live.device, live.world)
        x, _ = next(live.test_loader.iterate(0, shard=False))  # the whole first batch on every rank
        layers = layer_scales(live.model, x, live.spec, live.device)
    widths = widths_of(live.model)
    st.eval_flops += eval_flops(live.spec, widths, live.test_loader.num_samples, live.num_classes, live.image_size)
    st.eval_flops += step_flops(live.spec.arch, widths, live.num_classes, live.image_size, len(x), train=False)
    return test_loss, test_acc, layers


@torch.no_grad()
def layer_scales(model: nn.Module, x: torch.Tensor, spec: RunSpec, device) -> dict[str, list[float]]:
    """{conv/linear path: [std of its weight, variance of its output]} on one evaluation batch in eval
    mode (no state changes): how variance transfer keeps weight and activation scales across growth."""
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out.float().var().item()))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    try:
        with autocast(spec, device):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    return {name: [round(modules[name].weight.float().std().item(), 6), round(v, 6)] for name, v in outputs.items()}


def account(live: Live, st: LoopState, epoch: int, event: GrowthEvent | None, train_loss: float, lr: float,
            test_loss: float, test_acc: float) -> dict:
    """The epoch's training FLOPs, and its history row."""
    steps, batch = len(live.train_loader), live.train_loader.batch_size
    widths = widths_of(live.model)
    train_step = step_flops(live.spec.arch, widths, live.num_classes, live.image_size, batch)
    st.train_flops += steps * train_step
    row = {"epoch": epoch + 1, "stage": st.stage, "lr": lr, "batch_size": batch, "steps": steps,
           "train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc, "widths": widths,
           "params": param_count(live.model), "train_step_flops": train_step, "train_flops": st.train_flops,
           "eval_flops": st.eval_flops, "growth_flops": st.growth_flops,
           **{f"{k}_seconds": v for k, v in live.timer.as_dict().items()}, **live.record}
    if event is not None:
        row["growth"] = event.info
    return row


def save_checkpoint(live: Live, st: LoopState, rd: RunDir) -> None:
    with live.timer.section("checkpoint"):
        st.times = live.timer.as_dict()
        rd.save_checkpoint({"widths": widths_of(live.model), "model": live.model.state_dict(),
                            "optimizer": live.optimizer.state_dict(), "method": live.method.state_dict(),
                            "loop": st.to_dict(), "world_size": live.world.size,
                            "rng": {"torch": torch.get_rng_state(), "growth": live.growth_gen.get_state()}})


def build_result(live: Live, st: LoopState, data_source: str, mode: dict, setup_seconds: float) -> dict:
    spec, method, model = live.spec, live.method, live.model
    hist, t = st.history, st.times
    steps_per_epoch = live.train_loader.size // spec.batch_size
    large_flops = spec.epochs * steps_per_epoch * step_flops(spec.arch, method.target_widths(), live.num_classes,
                                                             live.image_size, spec.batch_size)
    per_stage = {}
    for row in hist:
        s = per_stage.setdefault(row["stage"], {"stage": row["stage"], "widths": row["widths"], "epochs": 0,
                                                "train_flops": 0})
        s["epochs"] += 1
        s["train_flops"] += row["steps"] * row["train_step_flops"]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(spec),
        "config_hash": config_hash(spec),
        "config": spec_to_dict(spec),
        "method": spec.method,
        "traits": methods.method_traits(spec.method),
        "data_source": data_source,
        "environment": environment(live.device),
        # the execution mode: each auto field's resolved value, what was asked and why, the hardware
        "mode": {**mode, "compile": spec.compile, "deterministic": spec.deterministic, "device": str(live.device)},
        "status": "complete",
        "times": {"train_seconds": t.get("train", 0.0), "eval_seconds": t.get("eval", 0.0),
                  "growth_seconds": t.get("growth", 0.0), "checkpoint_seconds": t.get("checkpoint", 0.0),
                  "compile_seconds": t.get("compile", 0.0),
                  "total_seconds": t.get("wall", 0.0) + t.get("checkpoint", 0.0),
                  "last_setup_seconds": setup_seconds},
        "accounting": accounting(hist, t),
        "flops": {"convention": CONVENTION, "train": st.train_flops, "eval": st.eval_flops,
                  "growth_overhead": st.growth_flops, "train_with_overhead": st.train_flops + st.growth_flops,
                  "large_train": large_flops, "train_cost_fraction": st.train_flops / large_flops,
                  "per_stage": list(per_stage.values())},
        # optimizer state at growth (carry / reset), resolved from growth.optimizer; None: never grows
        "growth_optimizer": method.optimizer_policy(),
        "final_params": param_count(model),
        "final_widths": widths_of(model),
        "width_history": st.width_history,
        "resumed_at_epochs": st.resumes,
        # the machines its epochs ran on (LoopState.machines); more than one: its times are not one machine's
        "machines": st.machines,
        "moved_between_machines": len(st.machines) > 1,
        "world_size": live.world.size,  # processes (DDP ranks) that trained it: bench/distributed.py  # a run killed and resumed (crash, preemption, time-out) says where
        "epochs": hist,
        "final_test_acc": hist[-1]["test_acc"],
        "best_test_acc": max(h["test_acc"] for h in hist),
    }
