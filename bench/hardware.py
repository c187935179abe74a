"""What this machine computes fast, what the `auto` settings resolve to, and its fingerprint.

``precision: auto``  bf16 autocast where the device computes bf16 natively, else fp32:
    CUDA   ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute capability 8.0+);
    CPU    oneDNN runs a bf16 convolution with a native-bf16 kernel (AVX-512-BF16 or AMX). Found by
           running one small bf16 convolution with oneDNN's verbose log on and reading the kernel it
           chose: the CPU flags alone do not say what oneDNN will use (``ONEDNN_MAX_CPU_ISA`` can cap
           it, and ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` is true on any AVX-512 CPU, where
           bf16 is emulated). Without native kernels bf16 is emulated: 2.7x slower than fp32 on an AVX-512
           Xeon, 9-30x on AVX2 (docs/measurements.md).
``channels_last: auto``  on the CPU always: oneDNN's convolutions are faster in channels_last in fp32
    and in native bf16 (measured on AVX2, AVX-512-BF16 and AMX: docs/measurements.md); on CUDA with bf16 (tensor
    cores read NHWC), not in fp32.
``channels_last_align: auto``  16 where the bf16 kernels are AMX (there bf16 channels_last is up to 3x
    slower than NCHW at widths that are not multiples of 16), else 0 (channels_last at every width:
    faster on AVX2 and AVX-512-BF16, measured; on an AVX-512 Xeon in fp32 it depends on the model: 16 makes
    ResNet-20's grown runs 1.14x instead of 0.88x, MobileNetV1's slower, VGG-11's level: docs/measurements.md).

The fingerprint names what changes kernels and so step times: device and CPU model and family (or GPU name),
the ISA oneDNN and ATen dispatch to, the bf16 kernel, the torch version and the resolved mode.
Speed baselines are keyed by it (bench/speed.py).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
from functools import lru_cache

import torch

from bench.errors import ConfigError

# RunSpec fields that accept "auto" beside their type: resolved for the hardware by resolve()
AUTO_FIELDS = ("precision", "channels_last", "channels_last_align")

AUTO = "auto"
# ISAs of oneDNN's kernels that compute bf16 natively (the part after ':' in its kernel names)
NATIVE_BF16 = re.compile(r"bf16|amx|avx10")
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def isa_cap() -> str:
    """The ISA cap set in the environment ("ATEN_CPU_CAPABILITY=avx2 ..."), or "none"."""
    return " ".join(f"{v}={os.environ[v]}" for v in ISA_CAPS if os.environ.get(v)) or "none"


def separate_compile_cache() -> None:
    """Under an ISA cap, give torch.compile a cache of its own. Inductor's cache key leaves out
    ATEN_CPU_CAPABILITY (torch 2.14): kernels cached uncapped (AVX-512) and loaded capped (AVX2), or
    the reverse, computed wrong losses or corrupted the heap on the same machine. A cache directory
    the user chose is left alone (importing torch._dynamo writes the default one into the variable)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = default_cache_dir()
    except ImportError:  # an older torch without that module (pyproject admits 2.3): its same default
        import getpass

        default = os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser()))
    cap = isa_cap()
    if cap != "none" and os.environ.get("TORCHINDUCTOR_CACHE_DIR", default) == default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = default + "-" + re.sub(r"[^A-Za-z0-9]+", "_", cap)


def cpu_info() -> dict[str, str]:
    """Vendor, model name and family/model numbers of the CPU (Linux /proc/cpuinfo; elsewhere what
    platform says). Virtual machines often show one generic model name for several generations (KVM:
    "AMD EPYC" for Zen 4 and Zen 5), whose step times differ: the family/model numbers tell them apart."""
    import platform

    info = {"vendor": "", "model": platform.processor() or platform.machine(), "family": ""}
    numbers = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value.strip()
                elif key in ("cpu family", "model") and key not in numbers:
                    numbers[key] = value.strip()
                elif key == "model name":
                    info["model"] = value.strip()
                    break
    except OSError:
        pass
    if numbers:
        info["family"] = f"{numbers.get('cpu family', '?')}/{numbers.get('model', '?')}"
    return info


def _capture_stdout(fn) -> str:
    """What ``fn`` prints to file descriptor 1 (oneDNN's verbose log is C stdio, not sys.stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return tmp.read()


@lru_cache(maxsize=1)
def onednn_probe() -> dict[str, str]:
    """oneDNN's ISA and the kernel it picks for a bf16 convolution ("" when it picks none)."""
    if not torch.backends.mkldnn.is_available():
        return {"isa": "", "bf16_kernel": ""}

    def conv():
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            torch.nn.functional.conv2d(torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3))  # logs oneDNN's ISA
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch.nn.functional.conv2d(torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3))

    try:
        log = _capture_stdout(conv)
    except (OSError, RuntimeError):
        return {"isa": "", "bf16_kernel": ""}
    isa, kernel = "", ""
    for line in log.splitlines():
        fields = line.split(",")
        if "isa:" in line:
            isa = line.split("isa:", 1)[1].strip()
        elif "convolution" in fields and "exec" in fields and "src:bf16" in line:
            kernel = fields[fields.index("convolution") + 1]  # e.g. jit_bf16:avx512_core_bf16
    return {"isa": isa, "bf16_kernel": kernel}


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, why)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} {'has' if ok else 'lacks'} native bf16 (compute capability 8.0+)"
    kernel = onednn_probe()["bf16_kernel"]
    isa = kernel.rpartition(":")[2]
    if kernel and NATIVE_BF16.search(isa):
        return True, f"oneDNN runs bf16 convolutions natively ({kernel})"
    why = f"oneDNN's bf16 convolution is {kernel} (emulated)" if kernel else "oneDNN has no bf16 convolution kernel here"
    return False, f"{why}: bf16 would be emulated, 3-30x slower than fp32"


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(fp32 | bf16, reason) for a requested precision (auto | fp32 | bf16)."""
    native, why = native_bf16(device)
    if requested == AUTO:
        return ("bf16" if native else "fp32"), f"auto: {why}"
    if requested == "bf16" and not native:
        return "bf16", f"asked for; WARNING: {why}"
    return requested, "asked for"


def resolve_channels_last(requested, precision: str, device: torch.device) -> tuple[bool, str]:
    if requested != AUTO:
        return bool(requested), "asked for"
    if device.type == "cuda":
        return precision == "bf16", f"auto: {'bf16 tensor cores read NHWC' if precision == 'bf16' else 'fp32 on CUDA'}"
    return True, "auto: oneDNN's CPU convolutions are faster in channels_last (fp32 and native bf16)"


def resolve_align(requested, precision: str, channels_last: bool, device: torch.device) -> tuple[int, str]:
    if requested != AUTO:
        return int(requested), "asked for"
    probe = onednn_probe()
    amx = device.type == "cpu" and ("amx" in probe["bf16_kernel"] or "AMX" in probe["isa"])
    if channels_last and precision == "bf16" and amx:
        return 16, "auto: AMX bf16 channels_last kernels are slow at widths not a multiple of 16"
    return 0, "auto: channels_last at every width"


def fingerprint(device: torch.device, mode: str) -> dict[str, str]:
    """What changes kernels and so step times; ``mode`` is the resolved precision/memory format."""
    fp = {"device": device.type, "torch": torch.__version__.split("+")[0], "mode": mode}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        fp.update(model=torch.cuda.get_device_name(device), isa=f"sm_{major}{minor}", cuda=str(torch.version.cuda))
    else:
        cpu = cpu_info()
        probe = onednn_probe()
        fp.update(vendor=cpu["vendor"], model=cpu["model"], family=cpu["family"] or "unknown", aten_isa=torch.backends.cpu.get_cpu_capability(),
                  onednn_isa=probe["isa"], bf16_kernel=probe["bf16_kernel"] or "none",
                  # the environment variables that cap the ISA kernels dispatch to (a stand-in for an older CPU)
                  isa_cap=isa_cap())
    return fp


def fingerprint_key(fp: dict[str, str]) -> str:
    return " | ".join(f"{k}={fp[k]}" for k in sorted(fp))


def matches(recorded: dict[str, str | None], fp: dict[str, str]) -> bool:
    """A recorded fingerprint matches when every field it recorded equals this machine's
    (a field recorded as null was not known when the entry was measured)."""
    return all(v is None or fp.get(k) == v for k, v in recorded.items())


def mode_label(precision: str, channels_last: bool, align: int) -> str:
    return precision + (f"/cl{align or ''}" if channels_last else "")


def allowed_cores() -> list[int]:
    """The cores this process may use (its CPU affinity: ``taskset -c 0,1`` pins a run)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def busy_cores(cores: list[int], seconds: float = 0.1) -> float:
    """How many of ``cores`` other processes keep busy, from /proc/stat sampled over ``seconds`` (this
    process sleeps meanwhile); 0 where /proc/stat cannot be read."""
    import time

    def sample() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *v = line.split()
                    v = [int(x) for x in v]
                    out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))  # total, idle + iowait
        return out

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    busy = 0.0
    for c in cores:
        if c in a and c in b and b[c][0] > a[c][0]:
            busy += 1 - (b[c][1] - a[c][1]) / (b[c][0] - a[c][0])
    return busy


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, steal): CPU seconds all processes have used on every core since boot (/proc/stat: all but idle
    and iowait), and the part of them the hypervisor gave to other guests while this one's vCPUs were
    runnable (steal: a noisy neighbour, invisible to ``ps``); None where it cannot be read. Their change over
    an epoch, less this process's own CPU time, is what others took (bench/train.py machine_load)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        return (sum(v[:8]) - v[3] - v[4]) / tick, v[7] / tick  # user..steal; guest is inside user
    except (OSError, ValueError, IndexError):
        return None


def competition(load: dict, threads: int) -> str:
    """What competed with a run in an epoch, in words, from its load record."""
    if load.get("others_cores") is None:
        return f"this run got {load['cpu_share']:.0%} of its {threads} thread(s)' CPU time"
    stolen = f" ({load['steal_cores']:.2f} of them stolen by the hypervisor)" if load.get("steal_cores") else ""
    return f"other processes kept {load['others_cores']:.2f} cores busy{stolen}"


def threads_default(busy: float | None = None) -> int:
    """OMP_NUM_THREADS where set, else the cores this process may use that other processes leave free
    (``busy``: how many they keep busy, busy_cores), at least 1: on a loaded 2-core machine one thread
    stepped ResNet-20 faster than two (220 against 270 ms a step, docs/measurements.md): threads that
    share a core with another busy process wait on each other at every parallel region."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    import math

    cores = allowed_cores()
    busy = busy_cores(cores) if busy is None else busy
    # a core counts as taken when others keep it 75 % busy or more: a moment's noise does not change the count
    return max(1, min(len(cores), len(cores) - math.floor(busy + 0.25)))


def describe(device: torch.device) -> list[str]:
    """Lines for ``python -m bench env``."""
    precision, p_why = resolve_precision(AUTO, device)
    cl, cl_why = resolve_channels_last(AUTO, precision, device)
    align, a_why = resolve_align(AUTO, precision, cl, device)
    fp = fingerprint(device, mode_label(precision, cl, align))
    family = f", family {fp['family']}" if fp.get("family", "unknown") != "unknown" else ""
    lines = [f"device:            {device}" + (f" ({fp['model']}{family})" if fp.get("model") else "")]
    if device.type == "cpu":
        lines += [f"cpu vendor:        {fp['vendor'] or 'unknown'}",
                  f"ATen ISA:          {fp['aten_isa']}",
                  f"oneDNN ISA:        {fp['onednn_isa'] or 'unknown'}",
                  f"bf16 convolution:  {fp['bf16_kernel']}",
                  f"threads:           {threads_default()} (OMP_NUM_THREADS, else the cores this process may use that other "
                  "processes leave free; "
                  "set with --threads N, pin cores with taskset)"]
    native, why = native_bf16(device)
    lines += [f"native precisions: fp32{', bf16' if native else ''} ({why})",
              f"precision auto ->  {precision} ({p_why})",
              f"channels_last auto -> {cl} ({cl_why})",
              f"channels_last_align auto -> {align} ({a_why})",
              f"fingerprint:       {fingerprint_key(fp)}"]
    return lines


def resolve_device(spec) -> torch.device:
    if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but torch.cuda.is_available() is False; use --device cpu or auto")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve(spec):
    """``spec`` with its "auto" fields resolved for this machine (idempotent); their names are kept
    in ``auto_resolved`` so that a result can say what was asked."""
    asked = [n for n in AUTO_FIELDS if getattr(spec, n) == AUTO]
    if not asked:
        return spec
    device = resolve_device(spec)
    precision = resolve_precision(spec.precision, device)[0]
    cl = resolve_channels_last(spec.channels_last, precision, device)[0]
    align = resolve_align(spec.channels_last_align, precision, cl, device)[0]
    return dataclasses.replace(spec, precision=precision, channels_last=cl, channels_last_align=align,
                               auto_resolved=tuple(sorted({*spec.auto_resolved, *asked})))


def explain(spec, device: torch.device) -> dict:
    """The run's execution mode for its result: each resolved value, what was asked, and why."""
    out = {}
    asked = lambda n: AUTO if n in spec.auto_resolved else getattr(spec, n)  # noqa: E731
    precision, why = resolve_precision(asked("precision"), device)
    out.update(precision=spec.precision, precision_asked=asked("precision"), precision_reason=why)
    cl, why = resolve_channels_last(asked("channels_last"), spec.precision, device)
    out.update(channels_last=spec.channels_last, channels_last_asked=asked("channels_last"), channels_last_reason=why)
    align, why = resolve_align(asked("channels_last_align"), spec.precision, spec.channels_last, device)
    out.update(channels_last_align=spec.channels_last_align, channels_last_align_asked=asked("channels_last_align"),
               channels_last_align_reason=why)
    out["label"] = mode_label(spec.precision, spec.channels_last, spec.channels_last_align)
    out["fingerprint"] = fingerprint(device, out["label"])
    return out
