"""Character-level text: Tiny Shakespeare, or any plain-text file a user points at.

The text is split as nanoGPT does: the first 90 % of the characters train, the last 10 % validate
(contiguous). The vocabulary is the sorted set of the whole file's characters (Tiny Shakespeare: 65).

A training epoch is ``train_subset`` windows of ``context`` + 1 characters at random offsets, drawn by a
generator seeded by (seed, epoch) like the image loaders' order, so a resumed run sees the same
batches; by default as many windows as cover the training text once. Input: the window's first
``context`` characters; target: the next character at every position. Validation reads the
validation text as consecutive, non-overlapping windows (``test_subset``: the first N of them), every
position scored, so its loss is per character over a fixed set.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from bench.errors import DataError

TRAIN_FRACTION = 0.9
SHAKESPEARE_CHARS = 65  # distinct characters of Tiny Shakespeare (its README)


@dataclass(frozen=True)
class Text:
    train: torch.Tensor  # int64 character ids
    val: torch.Tensor
    vocab: str  # the characters, in id order
    source: str


def text_path(data_dir: str | Path) -> Path:
    """The text file: ``data_dir`` itself if it is a file, else its input.txt."""
    p = Path(data_dir)
    path = p if p.is_file() else p / "input.txt"
    if not path.is_file():
        raise DataError(f"{path}: missing; point --data-dir at a folder holding input.txt (Tiny Shakespeare: the "
                        f"char-rnn/nanoGPT input.txt) or at a plain-text file")
    return path


def _verify(path: Path) -> None:
    """Check ``path`` against a SHA256SUMS beside it, when there is one."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    for line in sums.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != parts[0].lower():
                raise DataError(f"{path}: SHA256 mismatch with {sums} (corrupt or altered); copy it again")
            return


@lru_cache(maxsize=4)
def load_text(data_dir: str, dataset: str = "tinyshakespeare") -> Text:
    path = text_path(data_dir)
    _verify(path)
    try:
        chars = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    vocab = "".join(sorted(set(chars)))
    if dataset == "tinyshakespeare" and len(vocab) != SHAKESPEARE_CHARS:
        raise DataError(f"{path}: {len(vocab)} distinct characters, Tiny Shakespeare has {SHAKESPEARE_CHARS}: "
                        "another text (it would train a head of another size under Tiny Shakespeare's name)")
    table = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([table[c] for c in chars], dtype=torch.long)
    n = int(len(ids) * TRAIN_FRACTION)
    return Text(ids[:n], ids[n:], vocab, f"{path.name} ({len(chars):,} characters, {len(vocab)} distinct)")


class TextLoader:
    """Batches of (input ids [batch, context], target ids [batch, context]) with the image loaders'
    interface (bench/data.py TensorLoader): seeded epochs, growth streams, rows per process."""

    def __init__(self, ids: torch.Tensor, context: int, batch_size: int, device: torch.device, train: bool,
                 windows: int = 0, seed: int = 0, rank: int = 0, world: int = 1):
        if len(ids) < context + 2:
            raise DataError(f"a text split of {len(ids)} characters is shorter than one window of {context + 1}")
        self.ids, self.context, self.train = ids.to(device), context, train
        self.device, self.seed, self.rank, self.world = device, seed, rank, world
        self.batch_size = batch_size
        full = (len(ids) - 1) // context  # windows that cover the split once
        self.windows = min(windows, full) if windows and not train else (windows or full)
        self.drop_last = train
        self.epoch = 0

    def __len__(self) -> int:
        n = self.windows
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else self.windows

    @property
    def size(self) -> int:
        return self.windows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch: int, batch_size: int | None = None, channels_last: bool | None = None) -> None:
        """The image loaders' call; ``channels_last`` has no meaning for token ids."""
        self.epoch = epoch
        self.batch_size = batch_size or self.batch_size

    def __iter__(self):
        return self.iterate(self.epoch)

    def iterate(self, epoch: int, stream: int = 0, shard: bool = True):
        t = self.context
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7 + stream)
            starts = torch.randint(0, len(self.ids) - t, (self.windows,), generator=g).to(self.device)
        else:
            starts = torch.arange(self.windows, device=self.device) * t
        rows = slice(self.rank, None, self.world) if shard else slice(None)
        offsets = torch.arange(t + 1, device=self.device)
        for i in range(len(self)):
            s = starts[i * self.batch_size:(i + 1) * self.batch_size][rows]
            w = self.ids[s[:, None] + offsets]
            yield w[:, :-1], w[:, 1:]


def text_loaders(spec, context: int, device: torch.device, rank: int = 0, world: int = 1):
    text = load_text(str(spec.data_dir), spec.dataset)
    train = TextLoader(text.train, context, spec.batch_size, device, True, spec.train_subset, spec.seed, rank, world)
    test = TextLoader(text.val, context, spec.eval_batch_size, device, False, spec.test_subset, rank=rank, world=world)
    return train, test, text.source
