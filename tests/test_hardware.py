"""precision / channels_last auto, the hardware fingerprint, and how results keep precisions apart."""
import json

import pandas as pd
import pytest
import torch

from bench import cli, hardware
from bench.config import ConfigError, config_hash, make_spec, run_id, spec_from_dict, spec_to_dict
from reports import tables
from reports.load import load_runs

CPU = torch.device("cpu")


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This process as on a CPU whose bf16 is emulated (AVX2 only)."""
    monkeypatch.setattr(hardware, "onednn_probe", lambda: {"isa": "Intel AVX2", "bf16_kernel": ""})


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(hardware, "onednn_probe", lambda: {"isa": "AMX", "bf16_kernel": "brg_conv_fwd:avx512_core_amx"})


def test_probe_agrees_with_the_cpu_flags():
    """Without ISA caps, oneDNN picks a native bf16 kernel exactly where the CPU has AVX-512-BF16 or AMX
    (read independently, from /proc/cpuinfo)."""
    import os
    from pathlib import Path

    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    flag_lines = [line for line in lines if line.startswith("flags")]
    if any(os.environ.get(v) for v in hardware.ISA_CAPS) or not flag_lines:
        pytest.skip("ISA capped, or not an x86 Linux CPU: the flags do not say what oneDNN may use")
    flags = set(flag_lines[0].split(":", 1)[1].split())
    native, why = hardware.native_bf16(CPU)
    assert native == bool(flags & {"avx512_bf16", "amx_bf16"}), why


def test_auto_resolves_to_fp32_without_native_bf16(no_native_bf16):
    spec = make_spec("quick")
    assert (spec.precision, spec.channels_last, spec.channels_last_align) == ("fp32", True, 0)
    assert spec.auto_resolved == ("channels_last", "channels_last_align", "precision")
    mode = hardware.explain(spec, CPU)
    assert mode["precision_asked"] == "auto" and "emulated" in mode["precision_reason"]
    assert mode["label"] == "fp32/cl" and mode["fingerprint"]["mode"] == "fp32/cl"
    # asked for explicitly: kept, with a warning in the reason
    forced = make_spec("quick", precision="bf16")
    assert forced.precision == "bf16" and "WARNING" in hardware.explain(forced, CPU)["precision_reason"]


def test_auto_resolves_to_bf16_with_amx_and_aligns_channels_last(amx):
    spec = make_spec("quick")
    assert (spec.precision, spec.channels_last, spec.channels_last_align) == ("bf16", True, 16)
    assert hardware.explain(spec, CPU)["label"] == "bf16/cl16"


def test_hash_covers_the_resolved_precision(monkeypatch):
    """One config on two kinds of hardware gives two run ids; an explicit value equal to the
    resolved one gives the same id (it computes the same thing)."""
    monkeypatch.setattr(hardware, "onednn_probe", lambda: {"isa": "", "bf16_kernel": ""})
    on_avx2 = make_spec("quick")
    monkeypatch.setattr(hardware, "onednn_probe", lambda: {"isa": "", "bf16_kernel": "jit:avx512_core_bf16"})
    on_bf16 = make_spec("quick")
    assert run_id(on_avx2) != run_id(on_bf16)
    assert config_hash(on_bf16) == config_hash(make_spec("quick", precision="bf16", channels_last=True,
                                                         channels_last_align=0))
    # resolution is idempotent and survives config.json
    assert hardware.resolve(on_bf16) is on_bf16 and spec_from_dict(spec_to_dict(on_avx2)) == on_avx2


def test_auto_resolved_is_not_a_flag(capsys):
    assert cli.main(["run", "--preset", "smoke", "--auto-resolved", "precision"]) == 2
    assert "unrecognized arguments: --auto-resolved" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown field 'auto_resolved'"):
        make_spec("smoke", auto_resolved=("precision",))


def test_env_command_prints_the_resolution(capsys):
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert "precision auto ->" in out and "fingerprint:" in out and "threads:" in out


def test_fingerprint_names_the_isa_cap(monkeypatch):
    for var in hardware.ISA_CAPS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    fp = hardware.fingerprint(CPU, "fp32/cl")
    assert fp["isa_cap"] == "ONEDNN_MAX_CPU_ISA=AVX2" and fp["device"] == "cpu" and fp["torch"]
    assert hardware.matches({**fp, "model": None}, fp) and not hardware.matches({**fp, "mode": "bf16/cl"}, fp)


def _run_dir(root, name, precision, seconds, acc, model="CPU A", family=None, world=1):
    d = root / name
    d.mkdir()
    config = {"method": name.split("-")[0], "arch": "resnet20", "dataset": "cifar10", "seed": int(name[-1]),
              "epochs": 15, "train_subset": 10000, "precision": precision}
    fp = {"device": "cpu", "model": model, "aten_isa": "AVX2", "bf16_kernel": "none", "isa_cap": "none",
          "torch": "2.14.1", "mode": f"{precision}/cl", **({"family": family} if family else {})}
    result = {"config_hash": name, "data_source": "CIFAR-10, JPEG q75 copy", "final_test_acc": acc,
              "best_test_acc": acc, "final_params": 1, "environment": {"device_name": "cpu"},
              "times": {"train_seconds": seconds, "growth_seconds": 0.0, "total_seconds": seconds},
              "flops": {"train_cost_fraction": 1.0, "train_with_overhead": 1, "large_train": 1},
              "mode": {"precision": precision, "channels_last": True, "compile": False, "deterministic": False,
                       "label": f"{precision}/cl", "fingerprint": fp}, "world_size": world}
    (d / "config.json").write_text(json.dumps(config))
    (d / "result.json").write_text(json.dumps(result))


@pytest.mark.parametrize("other", [{"family": "26/2"}, {"world": 2}], ids=["cpu-generation", "ddp-processes"])
def test_times_of_another_cpu_generation_or_process_count_are_not_compared(tmp_path, other):
    """KVM names Zen 4 and Zen 5 alike ("AMD EPYC"): the family/model numbers part them; a run on 2 DDP
    processes is another machine than 1 process for its times."""
    _run_dir(tmp_path, "large-s0", "bf16", 100.0, 0.70, family="25/17")
    _run_dir(tmp_path, "full-s0", "bf16", 60.0, 0.69, **{"family": "25/17", **other})
    _run_dir(tmp_path, "full-s1", "bf16", 60.0, 0.69, family="25/17")
    runs, _, _ = load_runs(tmp_path)
    sp = tables.speedups(runs).set_index("device")
    assert len(sp[sp.method == "full"]) == 2  # two rows for full: one comparable to large, one not
    assert sorted(sp[sp.method == "full"].speedup.isna()) == [False, True]


def test_reports_never_mix_precisions_or_hardware(tmp_path):
    _run_dir(tmp_path, "large-s0", "bf16", 100.0, 0.70)
    _run_dir(tmp_path, "large-s1", "fp32", 300.0, 0.72)
    _run_dir(tmp_path, "full-s0", "fp32", 150.0, 0.69, model="CPU B")
    runs, _, _ = load_runs(tmp_path)
    stats = tables.seed_stats(runs)
    large = stats[stats.method == "large"]
    assert sorted(large.acc_mean) == pytest.approx([70.0, 72.0]) and set(large.n) == {1}  # two rows, never one mean
    sp = tables.speedups(runs)
    full = sp[sp.method == "full"].iloc[0]
    assert pd.isna(full.speedup)  # the only fp32 large run ran on another CPU: no speed-up


def test_precision_table_times_every_mode():
    from bench.speed import precision_table

    table = precision_table(["mlp"], batch=4, steps=1)
    header, _, row = table.splitlines()
    assert header.count("|") == 6 and "bf16 channels_last" in header and row.startswith("| mlp |")
    assert row.count(" ms") == 4


_COMPILED_MATCHES_EAGER = """
import types, torch, torch.nn as nn
from bench.train import compile_model
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(48, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
x = torch.randn(64, 3, 4, 4)
eager, compiled = model(x), compile_model(model, types.SimpleNamespace(compile=True))(x)
print("max difference", (eager - compiled).abs().max().item())
assert torch.allclose(eager, compiled, atol=1e-5)
"""


def test_an_isa_cap_does_not_load_kernels_compiled_without_it(tmp_path):
    """Inductor's cache key leaves out ATEN_CPU_CAPABILITY: on an AVX-512 CPU, kernels compiled
    uncapped and loaded under the AVX2 cap (the project's AVX2 stand-in) computed wrong outputs
    (the training losses of a compiled run diverged) or corrupted the heap. compile_model keeps
    capped kernels in a cache of their own. (On a CPU without AVX-512 both runs pick AVX2 and
    share kernels correctly.)"""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in hardware.ISA_CAPS and k != "TORCHINDUCTOR_CACHE_DIR"}
    env["TMPDIR"] = str(tmp_path)  # inductor's default cache lives under the temp directory: a fresh one
    for cap in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}):  # fills the default cache, then compiles capped
        done = subprocess.run([sys.executable, "-c", _COMPILED_MATCHES_EAGER], env={**env, **cap},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cap or 'uncapped'}: {done.stdout[-500:]}{done.stderr[-2000:]}"


def test_default_threads_leave_out_the_cores_other_processes_keep_busy(monkeypatch):
    from bench import hardware

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "allowed_cores", lambda: [0, 1, 2, 3])
    assert [hardware.threads_default(b) for b in (0.0, 0.7, 1.2, 2.6, 3.9, 7.0)] == [4, 4, 3, 2, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hardware.threads_default(3.9) == 3  # the user's word wins


def test_a_busy_core_is_seen_and_a_run_says_so_at_its_start(tmp_path, cifar_dir):
    """A process spinning on every core this test may use: busy_cores sees it, and a run started beside it
    says the machine is busy in its first lines, with the thread count that fits what is free."""
    import subprocess
    import sys

    from bench import hardware
    from bench.config import make_spec
    from bench.train import run

    cores = hardware.allowed_cores()
    spinners = [subprocess.Popen(["taskset", "-c", str(c), sys.executable, "-c", "while True: pass"]) for c in cores]
    try:
        import time

        time.sleep(0.3)
        assert hardware.busy_cores(cores, 0.3) > 0.5 * len(cores)
        logs = []
        run(make_spec("smoke", epochs=1, threads=len(cores) + 1, data_dir=str(cifar_dir), out_dir=str(tmp_path)),
            progress=False, log=logs.append)
    finally:
        for p in spinners:
            p.kill()
    first = next(line for line in logs if "the machine is busy" in line)
    assert f"trains on {len(cores) + 1} thread(s)" in first and "--threads" in first
