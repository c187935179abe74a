"""Bad inputs, as a user or an adversary gives them: each is refused with its exit status and one line
naming the culprit, and leaves everything already on disk as it was."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import cli
from bench.config import make_spec, run_id
from reports import cli as report_cli


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.lstat().st_mode)
            for p in sorted(root.rglob("*"))}  # lstat: a broken link or a loop is a case, not a crash


@pytest.fixture(scope="module")
def template(tmp_path_factory, cifar_dir):
    """A workspace: results/ with one complete smoke run, a built report, and data folders."""
    root = tmp_path_factory.mktemp("template")
    assert cli.main(["run", "--preset", "smoke", "--epochs", "1", "--data-dir", str(cifar_dir),
                     "--out-dir", str(root / "results"), "--progress", "off"]) == 0
    assert report_cli.main(["--results", str(root / "results"), "--out", str(root / "report")]) == 0
    (root / "a_file").write_text("not a folder\n")
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("mine\n")
    jpeg = root / "data_bad_sums"
    jpeg.mkdir()
    for f in cifar_dir.glob("*.npz"):
        os.symlink(f, jpeg / f.name)
    (jpeg / "SHA256SUMS").write_text("this is not a checksum line\n")
    trunc = root / "data_truncated"
    trunc.mkdir()
    blob = (cifar_dir / "cifar10-jpegq75-test-jpegbytes.npz").read_bytes()[:5000]
    (trunc / "cifar10-jpegq75-test-jpegbytes.npz").write_bytes(blob)
    (trunc / "cifar10-jpegq75-train-jpegbytes.npz").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    (trunc / "SHA256SUMS").write_text(f"{digest}  cifar10-jpegq75-train-jpegbytes.npz\n"
                                      f"{digest}  cifar10-jpegq75-test-jpegbytes.npz\n")
    for name, relabel in (("data_one_class", lambda y: np.zeros_like(y)), ("data_label_10", lambda y: y % 10 + (y == 9))):
        _copy_with_labels(cifar_dir, root / name, relabel)
    altered = root / "data_altered"
    shutil.copytree(trunc, altered)
    (altered / "SHA256SUMS").write_text(f"{'0' * 64}  cifar10-jpegq75-train-jpegbytes.npz\n"
                                        f"{'0' * 64}  cifar10-jpegq75-test-jpegbytes.npz\n")
    return root


def _copy_with_labels(cifar_dir: Path, out: Path, relabel) -> None:
    """A valid-looking JPEG copy (500 images a split, checksums right) whose labels ``relabel`` changed."""
    out.mkdir()
    lines = []
    for split in ("train", "test"):
        name = f"cifar10-jpegq75-{split}-jpegbytes.npz"
        with np.load(cifar_dir / name) as z:
            jpeg, offs, y = z["jpeg"], z["offsets"], z["y"]  # each key access decompresses: once
        idx = np.linspace(0, len(y) - 1, 500).astype(int)  # every class (the copy is class-major)
        starts, ends = offs[idx], offs[idx + 1]
        blob = np.concatenate([jpeg[a:b] for a, b in zip(starts, ends)])
        offsets = np.concatenate([[0], np.cumsum(ends - starts)])
        np.savez(out / name, jpeg=blob, offsets=offsets, y=relabel(y[idx]))
        lines.append(f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}")
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _smoke_dir(ws: Path, cifar_dir, **kw) -> Path:
    spec = make_spec("smoke", data_dir=str(cifar_dir), out_dir=str(ws / "results"), **kw)
    return ws / "results" / run_id(spec)


def _edited_config(ws, cifar_dir):
    """A partial run folder whose config.json was made at another LR, put where lr 0.05 runs go."""
    d = _smoke_dir(ws, cifar_dir)
    src = next(p for p in (ws / "results").iterdir() if p.is_dir())
    shutil.copytree(src, d)
    (d / "result.json").unlink()
    cfg = json.loads((d / "config.json").read_text())
    cfg["lr"] = 50.0
    (d / "config.json").write_text(json.dumps(cfg))


def _locked(ws, cifar_dir):
    d = _smoke_dir(ws, cifar_dir)
    d.mkdir(parents=True)
    (d / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "since": "now"}))


def _garbage_config(ws, cifar_dir):
    d = _smoke_dir(ws, cifar_dir)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{not json")


def _two_process_result(ws, cifar_dir):
    """The complete run's result says 2 processes trained it (a DDP run): not this 1-process run's."""
    path = next((ws / "results").glob("*/result.json"))
    r = json.loads(path.read_text())
    path.write_text(json.dumps({**r, "world_size": 2}))


def _template_run(ws) -> Path:
    return next(p for p in (ws / "results").iterdir() if (p / "config.json").is_file())


def _put(name: str, text: str | None, drop_result: bool = False):
    """A setup: the template run's file ``name`` holds ``text`` (None: a folder in its place)."""
    def setup(ws, cifar_dir):
        run = _template_run(ws)
        if drop_result:
            (run / "result.json").unlink()
        (run / name).unlink(missing_ok=True)
        (run / name).mkdir() if text is None else (run / name).write_text(text)
    return setup


def _foreign_result(ws, cifar_dir):
    path = _template_run(ws) / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "run_id": "full-resnet20-cifar10-s3-0123456789"}))


def _user_folder(ws, cifar_dir):
    """A folder of the user's: a report.md, notes and a run folder in it."""
    mine = ws / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my draft\n")
    (mine / "notes.txt").write_text("mine\n")
    shutil.copytree(_template_run(ws), mine / "run1")


RUN = ["run", "--preset", "smoke", "--progress", "off"]
RUN1 = RUN + ["--epochs", "1", "--data-dir", "DATA", "--out-dir", "WS/results"]  # the template's run
AT = ["--data-dir", "DATA", "--out-dir"]
# (name, argv (DATA, WS replaced), exit status, words the one-line message must contain, setup)
CASES = [
    ("precision", RUN + ["--precision", "fp16"], 2, ["precision", "fp16"], None),
    ("lr nan", RUN + ["--lr", "nan"], 2, ["lr", "finite"], None),
    ("lr inf", RUN + ["--lr", "inf"], 2, ["lr", "finite"], None),
    ("lr negative", RUN + ["--lr", "-1"], 2, ["lr", "out of range"], None),
    ("momentum nan", RUN + ["--momentum", "nan"], 2, ["momentum", "finite"], None),
    ("weight decay inf", RUN + ["--weight-decay", "inf"], 2, ["weight_decay", "finite"], None),
    ("epochs zero", RUN + ["--epochs", "0"], 2, ["epochs", "out of range"], None),
    ("batch zero", RUN + ["--batch-size", "0"], 2, ["batch_size", "out of range"], None),
    ("batch text", RUN + ["--batch-size", "many"], 2, ["batch_size", "many"], None),
    ("width tiny", RUN + ["--width-mult", "0.001"], 2, ["width_mult", "0.001"], None),
    ("width nan", RUN + ["--width-mult", "nan"], 2, ["width_mult", "finite"], None),
    ("width huge", RUN + ["--width-mult", "1e9"], 2, ["width_mult", "out of range"], None),
    ("arch", RUN + ["--arch", "alexnet"], 2, ["arch", "alexnet"], None),
    ("method", RUN + ["--method", "magic"], 2, ["method", "magic"], None),
    ("dataset", RUN + ["--dataset", "mnist"], 2, ["dataset", "mnist"], None),
    ("p_c negative", RUN + ["--growth.p-c", "-1"], 2, ["growth.p_c"], None),
    # spelled as bench list and the config files spell it: the flag is found, and its value refused
    ("p_c negative, underscores", RUN + ["--growth.p_c=-1"], 2, ["growth.p_c"], None),
    ("schedule", RUN + ["--growth.schedule", "linear"], 2, ["growth.schedule", "linear"], None),
    ("flag typo", RUN + ["--growth.growht-epochs", "1,2"], 2, ["did you mean --growth.growth-epochs?"], None),
    ("flag prefix", RUN + ["--growth.growth-epoch", "1,2"], 2, ["did you mean --growth.growth-epochs?"], None),
    # a prefix is not the flag (`gate --updat` would rewrite the baseline file; status is the harmless probe)
    ("status flag prefix", ["status", "--out-di", "WS/nowhere"], 2, ["did you mean --out-dir?"], None),
    ("sweep flag typo", ["sweep", "fixed", "--max-paralel", "2"], 2, ["did you mean --max-parallel?"], None),
    ("firefly eps nan", RUN + ["--method", "firefly", "--options.eps", "nan"], 2, ["options.eps", "finite"], None),
    ("warmup too long", RUN + ["--warmup-epochs", "5"], 2, ["warmup_epochs"], None),
    ("label smoothing", RUN + ["--label-smoothing", "2"], 2, ["label_smoothing"], None),
    ("decay milestone", RUN + ["--lr-schedule", "step", "--lr-decay-epochs", "5"], 2, ["lr_decay_epochs"], None),
    ("bool", RUN + ["--nesterov", "perhaps"], 2, ["nesterov", "perhaps"], None),
    ("channels_last", RUN + ["--channels-last", "maybe"], 2, ["channels_last", "maybe"], None),
    ("cuda missing", RUN + ["--device", "cuda"], 2, ["device", "cuda"], None),
    ("preset", ["run", "--preset", "nope"], 2, ["preset", "nope"], None),
    ("suite", ["sweep", "nosuch", "--preset", "smoke"], 2, ["suite", "nosuch"], None),
    ("speed arch", ["speed", "--arch", "alexnet"], 2, ["arch", "alexnet"], None),
    ("subset too big", RUN + ["--train-subset", "100000", "--data-dir", "DATA", "--out-dir", "WS/results"], 1,
     ["subset", "100000"], None),
    ("zero steps", RUN + ["--batch-size", "1024", "--data-dir", "DATA", "--out-dir", "WS/results"], 2,
     ["batch_size", "1024"], None),
    ("data missing", RUN + ["--data-dir", "WS/nowhere", "--out-dir", "WS/results"], 1, ["nowhere"], None),
    ("sums malformed", RUN + ["--data-dir", "WS/data_bad_sums", "--out-dir", "WS/results"], 1, ["SHA256SUMS", "line 1"], None),
    ("npz truncated", RUN + ["--data-dir", "WS/data_truncated", "--out-dir", "WS/results"], 1, ["npz", "unreadable"], None),
    ("npz altered", RUN + ["--data-dir", "WS/data_altered", "--out-dir", "WS/results"], 1, ["SHA256 mismatch"], None),
    ("one-class cifar", RUN + ["--data-dir", "WS/data_one_class", "--out-dir", "WS/results"], 1,
     ["labels of 1 classes", "has 10"], None),
    ("label out of range", RUN + ["--data-dir", "WS/data_label_10", "--out-dir", "WS/results"], 1,
     ["labels run from 0 to 10", "0..9"], None),
    ("cifar100 on the copy", RUN + ["--dataset", "cifar100", "--arch", "resnet20", "--data-dir", "DATA",
                                    "--out-dir", "WS/results"], 1, ["cifar100"], None),
    ("out-dir is a file", RUN + ["--data-dir", "DATA", "--out-dir", "WS/a_file"], 1, ["a_file", "file"], None),
    ("out-dir under a file", RUN + ["--data-dir", "DATA", "--out-dir", "WS/a_file/sub"], 1, ["a_file", "a file stands where a folder should"], None),
    ("config edited", RUN + ["--data-dir", "DATA", "--out-dir", "WS/results"], 1, ["config.json", "lr: 50.0"], _edited_config),
    ("run locked", RUN + ["--data-dir", "DATA", "--out-dir", "WS/results"], 1, ["being trained", "pid"], _locked),
    ("config garbage", RUN + ["--data-dir", "DATA", "--out-dir", "WS/results"], 1, ["config.json", "not valid JSON"],
     _garbage_config),
    ("complete with 2 processes", RUN + ["--epochs", "1", "--data-dir", "DATA", "--out-dir", "WS/results"], 1,
     ["complete with 2 process(es)", "another computation"], _two_process_result),
    ("seed above int64", RUN + ["--seed", "99999999999999999999"], 2, ["seed", "out of range"], None),
    ("out-dir empty", RUN + ["--out-dir", ""], 2, ["out_dir", "empty"], None),
    ("milestone zero", RUN + ["--lr-schedule", "step", "--lr-decay-epochs", "0"], 2, ["lr_decay_epochs", ">= 1"], None),
    ("milestone negative", RUN + ["--lr-schedule", "step", "--lr-decay-epochs", "-1"], 2, ["lr_decay_epochs"], None),
    ("lr beyond fp32", RUN + ["--lr", "1e300"], 2, ["lr", "out of range"], None),
    ("speed zero rounds", ["speed", "--rounds", "0"], 2, ["--rounds"], None),
    ("speed zero steps", ["speed", "--steps", "0"], 2, ["--steps"], None),
    ("env negative threads", ["env", "--threads", "-1"], 2, ["--threads -1"], None),
    ("progress maybe", RUN + ["--progress", "maybe"], 2, ["--progress", "maybe", "--help"], None),
    ("preset without value", ["run", "--preset"], 2, ["--preset", "expected one argument"], None),
    ("no command", [], 2, ["required: command"], None),
    ("report out without value", ["REPORT", "--out"], 2, ["--out", "expected one argument"], None),
    ("status missing", ["status", "--out-dir", "WS/nowhere"], 1, ["nowhere", "no such folder"], None),
    ("report results missing", ["REPORT", "--results", "WS/nowhere", "--out", "WS/r2"], 2, ["nowhere"], None),
    ("report out = results", ["REPORT", "--results", "WS/results", "--out", "WS/results"], 2, ["results", "delete"], None),
    ("report out holds results", ["REPORT", "--results", "WS/results", "--out", "WS"], 2, ["holds the results"], None),
    ("report out not a report", ["REPORT", "--results", "WS/results", "--out", "WS/other"], 2, ["other", "not empty"], None),
    ("report out a file", ["REPORT", "--results", "WS/results", "--out", "WS/a_file"], 2, ["a_file", "file"], None),
    ("report out holds the user's notebook", ["REPORT", "--results", "WS/results", "--out", "WS/report"], 2,
     ["analysis.ipynb", "does not write"], lambda ws, d: (ws / "report" / "analysis.ipynb").write_text("{}\n")),
    ("report out inside a run", ["REPORT", "--results", "WS/results", "--out", "WS/results/RUN/rep"], 2,
     ["inside the run directory"], None),
    ("report out empty", ["REPORT", "--results", "WS/results", "--out", ""], 2, ["current folder"], None),
    ("report out dot", ["REPORT", "--results", "WS/results", "--out", "."], 2, ["current folder"], None),
    ("report flag prefix", ["REPORT", "--res", "WS/results"], 2, ["unrecognized arguments: --res"], None),
    ("report out holds the user's runs and notes", ["REPORT", "--results", "WS/results", "--out", "WS/mine"], 2,
     ["mine", "holds run directories"], _user_folder),
    # results folders no run can be made in
    ("out-dir a dangling link", RUN + AT + ["WS/dangling"], 1, ["dangling", "does not exist"],
     lambda ws, d: os.symlink(ws / "nowhere" / "x", ws / "dangling")),
    ("out-dir a link loop", RUN + AT + ["WS/loop"], 1, ["loop", "loop of symbolic links"],
     lambda ws, d: os.symlink(ws / "loop", ws / "loop")),
    ("out-dir in /proc", RUN + AT + ["/proc/growbench"], 1, ["/proc", "does not take new folders"], None),
    ("out-dir name too long", RUN + AT + ["WS/" + "a" * 300], 1, ["name too long"], None),
    ("out-dir path too long", RUN + AT + ["WS/" + "/".join(["b" * 200] * 25)], 1, ["name too long"], None),
    # run folders whose files are not what they should be
    ("config a list", RUN1, 1, ["config.json", "a JSON list"], _put("config.json", "[]")),
    ("config a folder", RUN1, 1, ["config.json", "a folder"], _put("config.json", None)),
    ("result of another run", RUN1, 1, ["result of run full-resnet20-cifar10-s3", "not of this one"], _foreign_result),
    ("lock a list", RUN1, 1, ["lock", "unreadable lock"], _put("lock", "[1, 2]", drop_result=True)),
    ("lock a string", RUN1, 1, ["lock", "unreadable lock"], _put("lock", '"held"', drop_result=True)),
    ("lock pid 2^70", RUN1, 1, ["lock", "unreadable lock"],
     _put("lock", json.dumps({"host": os.uname().nodename, "pid": 2**70}), drop_result=True)),
    ("history a folder", RUN1, 1, ["history.jsonl", "a folder"], _put("history.jsonl", None, drop_result=True)),
    # data and budgets that do not fit
    ("imagenet without class folders", ["run", "--preset", "smoke", "--dataset", "imagenet", "--arch", "resnet18",
                                        "--progress", "off"] + AT[:1] + ["WS/imnet"] + AT[2:] + ["WS/results"], 1,
     ["imnet/train", "class folder"], lambda ws, d: [(ws / "imnet" / s).mkdir(parents=True) for s in ("train", "val")]),
    ("adapted batch over the images", RUN + ["--method", "full", "--growth.batch-adapt", "true", "--batch-size", "256"]
     + AT + ["WS/results"], 2, ["growth.batch_adapt", "2048", "512 training images"], None),
    ("growth samples over the images", RUN + ["--method", "gradmax", "--options.samples", "100000"] + AT + ["WS/results"],
     2, ["options.samples", "100000", "512"], None),
    ("test subset too big", RUN + ["--test-subset", "10000000"] + AT + ["WS/results"], 1, ["10000000"], None),
    # flags that cannot change the run (one computation, one run id)
    ("growth epochs on large", RUN + ["--method", "large", "--growth.growth-epochs", "1"], 2,
     ["growth.growth_epochs", "large never grows"], None),
    ("p_c on small", RUN + ["--method", "small", "--growth.p-c", "0.5"], 2, ["growth.p_c", "small reads only"], None),
    ("growth epochs under exp", RUN + ["--method", "full", "--growth.schedule", "exp", "--growth.growth-epochs", "1"],
     2, ["growth.growth_epochs", "schedule is exp"], None),
    ("batch cap without adaptation", RUN + ["--method", "full", "--growth.batch-max-factor", "4"], 2,
     ["growth.batch_max_factor", "batch_adapt is off"], None),
    ("lr decay under cosine", RUN + ["--lr-decay", "0.5"], 2, ["lr_decay", "cosine"], None),
    ("momentum under adamw", RUN + ["--optimizer", "adamw", "--momentum", "0.5"], 2, ["momentum", "adamw"], None),
    ("beta1 under sgd", RUN + ["--beta1", "0.8"], 2, ["beta1", "sgd"], None),
    ("sweep flag for no run", ["sweep", "fixed", "--preset", "smoke", "--growth.p-c", "0.3"], 2,
     ["growth.p_c", "applies to no run of suite fixed"], None),
    # bench speed: everything checked before the first measurement
    ("speed negative bench threads", ["speed", "--bench-threads", "-1"], 2, ["--bench-threads", "-1"], None),
    ("speed negative threads", ["speed", "--threads", "-2"], 2, ["threads", "out of range"], None),
    ("speed method never grows", ["speed", "--method", "large"], 2, ["large", "never grows"], None),
    ("speed empty arch", ["speed", "--arch", "resnet20,"], 2, ["arch", "''"], None),
    ("speed json into a missing folder", ["speed", "--json", "WS/nope/x.json"], 2, ["--json", "not a writable folder"],
     None),
    # sweeps and campaigns
    ("launcher unknown", ["sweep", "fixed", "--preset", "smoke", "--launcher", "k8s"], 2, ["--launcher", "k8s"], None),
    ("sweep max parallel zero", ["sweep", "fixed", "--preset", "smoke", "--max-parallel", "0"], 2, ["--max-parallel"],
     None),
    ("campaign negative hours", ["campaign", "fixed", "--preset", "smoke", "--hours", "-1", "--dry-run", "--work-dir",
                                 "WS/c", "--done-dir", "WS/d"], 2, ["--hours", "-1"], None),
    ("campaign commit-every nan", ["campaign", "fixed", "--preset", "smoke", "--commit-every", "nan", "--dry-run",
                                   "--work-dir", "WS/c", "--done-dir", "WS/d"], 2, ["--commit-every", "nan"], None),
    ("campaign unknown suite", ["campaign", "nosuch", "--dry-run"], 2, ["suite", "nosuch"], None),
    # values out of their range or vocabulary
    ("threads negative", RUN + ["--threads", "-3"], 2, ["threads", "out of range"], None),
    ("eval batch zero", RUN + ["--eval-batch-size", "0"], 2, ["eval_batch_size", "out of range"], None),
    ("train subset negative", RUN + ["--train-subset", "-5"], 2, ["train_subset", "out of range"], None),
    ("subset seed negative", RUN + ["--subset-seed", "-1"], 2, ["subset_seed", "out of range"], None),
    ("start fraction zero", RUN + ["--method", "full", "--growth.start-fraction", "0"], 2, ["growth.start_fraction"], None),
    ("start fraction above one", RUN + ["--method", "full", "--growth.start-fraction", "2"], 2,
     ["growth.start_fraction", "<= 1"], None),
    ("optimizer unknown", RUN + ["--optimizer", "lion"], 2, ["optimizer", "lion"], None),
    ("lr schedule unknown", RUN + ["--lr-schedule", "poly"], 2, ["lr_schedule", "poly"], None),
    ("beta1 above one", RUN + ["--optimizer", "adamw", "--beta1", "1.5"], 2, ["beta1", "<= 1"], None),
    ("width rule unknown", RUN + ["--growth.width-rule", "magic"], 2, ["growth.width_rule", "magic"], None),
    ("compile not a bool", RUN + ["--compile", "yes please"], 2, ["compile", "yes please"], None),
    ("tracker unknown", RUN + ["--tracker", "wandb"], 2, ["tracker", "wandb"], None),
    ("device unknown", RUN + ["--device", "tpu"], 2, ["device", "tpu"], None),
]


@pytest.mark.parametrize("name, argv, status, words, setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line(name, argv, status, words, setup, template, cifar_dir, tmp_path, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    if setup is not None:
        setup(ws, cifar_dir)
    before = _snapshot(ws)
    run = next(p.name for p in (ws / "results").iterdir() if (p / "config.json").exists())
    argv = [a.replace("WS", str(ws)).replace("DATA", str(cifar_dir)).replace("RUN", run) for a in argv]
    try:
        rc = report_cli.main(argv[1:]) if argv[:1] == ["REPORT"] else cli.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _snapshot(ws) == before
