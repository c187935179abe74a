"""``--tracker tensorboard``: each epoch's history as TensorBoard scalars, read back; a run resumed from
an earlier checkpoint than its last logged epoch has each epoch once."""
import pytest

from bench import train
from bench.config import make_spec, run_id
from bench.records import RunDir

pytest.importorskip("tensorboard", reason="the tracker needs the optional tensorboard package (growbench[tracking])")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def test_tensorboard_tracker_logs_every_epoch_once_across_a_resume(tmp_path, cifar_dir, monkeypatch):
    spec = make_spec("smoke", method="full", epochs=3, data_dir=str(cifar_dir), out_dir=str(tmp_path),
                     tracker="tensorboard", **{"growth.stages": 2})
    original = train.save_checkpoint

    def killed_before_checkpoint_2(live, st, rd):
        if st.epoch == 2:
            raise KeyboardInterrupt  # epoch 2 is in history.jsonl and TensorBoard, not in checkpoint.pt
        original(live, st, rd)

    monkeypatch.setattr(train, "save_checkpoint", killed_before_checkpoint_2)
    with pytest.raises(KeyboardInterrupt):
        train.run(spec, progress=False, log=lambda *a: None)
    monkeypatch.setattr(train, "save_checkpoint", original)
    result = train.run(spec, progress=False, log=lambda *a: None)

    acc = _events(RunDir(tmp_path / run_id(spec)).path)
    test_acc = acc.Scalars("train/test_acc")
    assert [e.step for e in test_acc] == [1, 2, 3]  # epoch 2 logged twice, kept once
    assert [e.value for e in test_acc] == pytest.approx([h["test_acc"] for h in result["epochs"]])
    assert [e.step for e in acc.Scalars("growth/stage")] == [2, 3]
    widths = {t.split("/", 1)[1] for t in acc.Tags()["scalars"] if t.startswith("widths/")}
    assert widths == set(result["final_widths"])
    assert [e.value for e in acc.Scalars(f"widths/{sorted(widths)[0]}")][-1] == result["final_widths"][sorted(widths)[0]]
    assert acc.Scalars("lra/stage_1")  # the LRA ratios, from the first growth on


def test_no_tracker_writes_nothing(tmp_path, cifar_dir):
    spec = make_spec("smoke", epochs=1, data_dir=str(cifar_dir), out_dir=str(tmp_path))
    train.run(spec, progress=False, log=lambda *a: None)
    assert not (tmp_path / run_id(spec) / "tensorboard").exists()
