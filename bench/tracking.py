"""Optional experiment trackers: ``--tracker tensorboard`` writes each epoch's history row (losses,
accuracy, LR, widths, FLOPs, seconds, LRA ratios) and each growth event as TensorBoard scalars in the
run directory (``<run>/tensorboard``; view with ``tensorboard --logdir results``), offline. A resumed
run drops what was logged after its checkpoint (``purge_step``), so no epoch appears twice."""
from __future__ import annotations

from pathlib import Path

TRACKERS = ("none", "tensorboard")


class NoTracker:
    def log_epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    def __init__(self, run_dir: Path, resume_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from bench.errors import ConfigError
            raise ConfigError("tracker: tensorboard needs the tensorboard package: "
                              "pip install 'growbench[tracking]' (or pip install tensorboard)") from None
        # steps are epochs (1-based); events at or after the first epoch still to train are dropped
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_epoch + 1)

    def log_epoch(self, row: dict) -> None:
        step = row["epoch"]
        for key in ("train_loss", "test_loss", "test_acc", "lr", "batch_size", "params", "train_flops",
                    "eval_flops", "growth_flops", "stage"):
            if key in row:
                self.writer.add_scalar(f"train/{key}", row[key], step)
        for key, value in row.items():
            if key.endswith("_seconds"):
                self.writer.add_scalar(f"time/{key}", value, step)
        for group, width in row.get("widths", {}).items():
            self.writer.add_scalar(f"widths/{group}", width, step)
        for stage, ratio in row.get("lra", {}).items():
            self.writer.add_scalar(f"lra/stage_{stage}", ratio, step)
        if "growth" in row:
            self.writer.add_scalar("growth/stage", row["growth"].get("stage", 0), step)
            self.writer.add_scalar("growth/extra_flops", row["growth"].get("extra_flops", 0), step)
            self.writer.add_text("growth/event", str(row["growth"]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_tracker(name: str, run_dir: Path, resume_epoch: int):
    return TensorBoardTracker(run_dir, resume_epoch) if name == "tensorboard" else NoTracker()
