"""Datasets and loaders.

Sources, detected from what lies in ``data_dir``:
  * CIFAR-10 / CIFAR-100 in torchvision's on-disk format (``cifar-10-batches-py``,
    ``cifar-100-python``); downloaded only when the run asks for it (``download: true``);
  * the CIFAR-10 JPEG q75 copy (``cifar10-jpegq75-{train,test}-jpegbytes.npz`` + SHA256SUMS),
    verified before use and named in every result, since its accuracies are not bit-comparable
    with the original's;
  * ImageNet as class folders (``train/<class>/*.JPEG``, ``val/<class>/*.JPEG``);
  * text for the character language model: Tiny Shakespeare or any UTF-8 file (bench/text.py).

CIFAR splits are held as one uint8 tensor on the training device; random crop (pad 4) and
horizontal flip are done per batch on tensors (``TensorLoader``): worker processes would take
the two CPU cores from training, and a GPU-resident split never waits on the host.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.errors import ConfigError, DataError  # noqa: F401  (DataError: importers find it here too)

JPEG_PREFIX = "cifar10-jpegq75"
JPEG_SOURCE = "CIFAR-10, JPEG q75 copy"
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# classes; for text, the vocabulary (the model predicts one of them at every position)
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "tinyshakespeare": 65}
DISPLAY_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet",
                 "tinyshakespeare": "Tiny Shakespeare"}  # as the reports name them
TEXT_DATASETS = ("tinyshakespeare",)
TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def image_size(spec) -> int:
    """Input resolution of a run: CIFAR images are 32x32, ImageNet crops 224x224; for text, the model's
    context length in characters."""
    if spec.dataset in TEXT_DATASETS:
        from bench.models import model_class

        return model_class(spec.arch).image_size
    return 224 if spec.dataset == "imagenet" else 32


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    source: str  # human-readable provenance, recorded in every result


# -- subsets -----------------------------------------------------------------------------------
def balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices with classes as equal as possible (the first n % C classes get one more),
    drawn at random within each class. Sorted, so a subset never depends on the file's order
    beyond which images it holds. n = 0 or n >= len means all."""
    labels = np.asarray(labels)
    if n > len(labels):
        raise DataError(f"subset of {n} images asked for, but the split holds only {len(labels)}")
    if n <= 0 or n == len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    per, extra = divmod(n, len(classes))
    chosen = []
    for i, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        k = per + (1 if i < extra else 0)
        if k > len(idx):
            raise DataError(f"balanced subset of {n}: class {c} has only {len(idx)} images")
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


# -- CIFAR, JPEG copy ------------------------------------------------------------------------
@lru_cache(maxsize=None)
def verify_jpeg_copy(data_dir: str) -> None:
    """Check both files against SHA256SUMS (once per process)."""
    root = Path(data_dir)
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"{sums}: missing; the JPEG copy of CIFAR-10 ships it beside the .npz files "
                        f"(expected in {root}: SHA256SUMS, {JPEG_PREFIX}-train-jpegbytes.npz, {JPEG_PREFIX}-test-jpegbytes.npz)")
    expected = {}
    for i, line in enumerate(sums.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0].lower()):
                raise DataError(f"{sums}: line {i} is not '<sha256 hex digest>  <file name>': {line[:80]!r}")
            expected[parts[1].lstrip("*")] = parts[0].lower()  # sha256sum writes lower case; others upper
    for split in ("train", "test"):
        name = f"{JPEG_PREFIX}-{split}-jpegbytes.npz"
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: missing; expected the {split} split of the CIFAR-10 JPEG copy here")
        if name not in expected:
            raise DataError(f"{sums}: has no checksum for {name}")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != expected[name]:
            raise DataError(f"{path}: SHA256 mismatch (corrupt or altered copy); expected {expected[name]}, "
                            f"got {h.hexdigest()}. Copy the folder again from its source.")


def check_labels(labels: np.ndarray, num_classes: int, source: Path) -> None:
    """A split's labels are the dataset's classes, every one present: a file with labels out of range, or
    one class only, is another dataset than the one the run names (refused before training, not mid-run)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise DataError(f"{source}: no labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{source}: labels run from {lo} to {hi}, outside this dataset's 0..{num_classes - 1}")
    present = len(np.unique(labels))
    if present != num_classes:
        raise DataError(f"{source}: labels of {present} classes, and the dataset has {num_classes}: "
                        "another dataset, or a damaged file")


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(idx), 32, 32, 3), dtype=np.uint8)
    for j, i in enumerate(idx):
        out[j] = np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
    return out


def _load_jpeg_copy(root: Path, train: bool, subset: int, seed: int) -> Split:
    verify_jpeg_copy(str(root))
    path = root / f"{JPEG_PREFIX}-{'train' if train else 'test'}-jpegbytes.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            blob, offsets, labels = z["jpeg"], z["offsets"], z["y"]
    except Exception as e:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError: a damaged file
        raise DataError(f"{path}: unreadable as the JPEG copy's .npz (keys jpeg, offsets, y): "
                        f"{type(e).__name__}: {e}") from None
    if len(offsets) != len(labels) + 1 or (len(offsets) and int(offsets[-1]) > len(blob)):
        raise DataError(f"{path}: offsets do not match the JPEG bytes ({len(offsets)} offsets, {len(labels)} labels, "
                        f"{len(blob)} bytes): a truncated or altered file")
    check_labels(labels, NUM_CLASSES["cifar10"], path)
    idx = balanced_indices(labels, subset, seed)  # the copy is class-major: never take a prefix
    try:
        images = _decode_jpegs(blob, offsets, idx)
    except Exception as e:  # PIL.UnidentifiedImageError, OSError: truncated or altered JPEG bytes
        raise DataError(f"{path}: a JPEG in it does not decode ({type(e).__name__}: {e})") from None
    return Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels[idx].astype(np.int64)),
                 JPEG_SOURCE)


# -- CIFAR, torchvision format ---------------------------------------------------------------
def _load_torchvision_cifar(dataset: str, root: Path, train: bool, subset: int, seed: int, download: bool,
                            verify: bool = True) -> Split:
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    folder = root / TORCHVISION_DIRS[dataset]
    if download:
        cls(str(root), train=train, download=True)  # torchvision fetches and checks the archive
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; expected {dataset.upper()} in torchvision's format under {root}. "
                        f"Pass --download (internet needed) or --data-dir pointing at the folder that holds "
                        f"{TORCHVISION_DIRS[dataset]}/ (or at the CIFAR-10 JPEG copy).")
    images, labels = [], []
    for name, md5 in (cls.train_list if train else cls.test_list):
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing; {dataset.upper()} in torchvision's format has it. Download again (--download).")
        if verify and not check_integrity(str(path), md5):
            raise DataError(f"{path}: MD5 mismatch (corrupt or altered); delete {folder} and download again (--download).")
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64))
    images_np, labels_np = np.concatenate(images), np.concatenate(labels)
    check_labels(labels_np, NUM_CLASSES[dataset], folder)
    idx = balanced_indices(labels_np, subset, seed)
    return Split(torch.from_numpy(images_np[idx]).contiguous(), torch.from_numpy(labels_np[idx]),
                 f"{dataset.upper()} (torchvision format)")


def load_cifar(dataset: str, data_dir: str | Path, train: bool, subset: int = 0, seed: int = 0,
               download: bool = False, verify: bool = True) -> Split:
    """One CIFAR split from ``data_dir``, whichever supported format lies there."""
    root = Path(data_dir)
    if any(root.glob(f"{JPEG_PREFIX}-*.npz")):
        if dataset != "cifar10":
            raise DataError(f"{root}: holds the CIFAR-10 JPEG copy, but the run asks for {dataset}")
        return _load_jpeg_copy(root, train, subset, seed)
    return _load_torchvision_cifar(dataset, root, train, subset, seed, download, verify)


# -- loaders ----------------------------------------------------------------------------------
class TensorLoader:
    """Batches from a split held in memory (on the training device), augmented per batch.

    Each epoch's order and augmentation come from a generator seeded by (seed, epoch), so an
    epoch is reproducible on its own: a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, split: Split, batch_size: int, dataset: str, device: torch.device, train: bool,
                 seed: int = 0, channels_last: bool = False, drop_last: bool | None = None,
                 rank: int = 0, world: int = 1):
        self.device = device
        # several processes (bench/distributed.py): rows rank::world of every global batch
        self.rank, self.world = rank, world
        self.train = train
        self.batch_size = batch_size
        self.seed = seed
        self.channels_last = channels_last
        self.drop_last = train if drop_last is None else drop_last  # equal training steps: exact FLOP counts
        images = split.images.to(device)
        self.pad = 4 if train else 0
        if self.pad:  # pad once; each batch then crops a random 32x32 window
            images = torch.nn.functional.pad(images, (self.pad,) * 4)
        self.images, self.labels = images, split.labels.to(device)
        mean, std = MEAN_STD[dataset]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    @property
    def size(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch: int, batch_size: int | None = None, channels_last: bool | None = None) -> None:
        """The epoch ``iter()`` gives next, at this (global) batch size (batch-size adaptation) and memory format."""
        self.epoch = epoch
        self.batch_size = batch_size or self.batch_size  # a multiple of world: checked by the loop at start
        self.channels_last = self.channels_last if channels_last is None else channels_last

    def _crop_flip(self, x: torch.Tensor, g: torch.Generator, batch: int, rows: slice) -> torch.Tensor:
        """Random 32x32 crops and flips drawn for the whole global batch of ``batch`` images (the same
        draws however many processes share it), applied to ``x``, its ``rows``."""
        size = x.shape[-1] - 2 * self.pad
        dy = torch.randint(0, 2 * self.pad + 1, (batch,), generator=g)[rows].to(self.device)
        dx = torch.randint(0, 2 * self.pad + 1, (batch,), generator=g)[rows].to(self.device)
        flip = (torch.rand(batch, generator=g) < 0.5)[rows].to(self.device)
        ar = torch.arange(size, device=self.device)
        ys = (dy[:, None] + ar)[:, None, :, None]
        xs = dx[:, None] + ar
        xs = torch.where(flip[:, None], xs.flip(1), xs)[:, None, None, :]
        return x[torch.arange(x.shape[0], device=self.device)[:, None, None, None],
                 torch.arange(3, device=self.device)[None, :, None, None], ys, xs]

    def __iter__(self):
        return self.iterate(self.epoch)

    def iterate(self, epoch: int, stream: int = 0, shard: bool = True):
        """The batches of one epoch; ``stream`` > 0 gives an independent order and augmentation (growth
        signals draw from their own stream, so they never shift the training data order). ``shard``:
        this process's rows of each global batch (all of them in a world of one); False: the whole
        global batch, the same on every process (growth signals, layer statistics)."""
        n = len(self.labels)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7 + stream)
        order = torch.randperm(n, generator=g).to(self.device) if self.train else torch.arange(n, device=self.device)
        rows = slice(self.rank, None, self.world) if shard else slice(None)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx[rows]]
            if self.train:
                x = self._crop_flip(x, g, len(idx), rows)
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx[rows]]


# -- ImageNet ---------------------------------------------------------------------------------
def imagenet_loader(data_dir: str | Path, train: bool, batch_size: int, subset: int, seed: int,
                    workers: int = 8, image_size: int = 224):
    """ImageNet from class folders, streamed with worker processes (it does not fit in memory):
    random-resized-crop + flip for training, resize 256 / center crop 224 for evaluation."""
    from torchvision import datasets, transforms

    folder = Path(data_dir) / ("train" if train else "val")
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; expected ImageNet as class folders ({folder}/<wnid>/*.JPEG). "
                        f"Download ILSVRC2012 from image-net.org and sort val/ into class folders.")
    mean, std = MEAN_STD["imagenet"]
    tf = (transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()])
          if train else transforms.Compose([transforms.Resize(int(image_size * 256 / 224)),
                                            transforms.CenterCrop(image_size)]))
    tf = transforms.Compose([tf, transforms.ToTensor(), transforms.Normalize(mean, std)])
    try:
        ds = datasets.ImageFolder(str(folder), transform=tf)
    except FileNotFoundError as e:  # no class folders, or none holding an image
        raise DataError(f"{folder}: {e} Expected ImageNet as class folders ({folder}/<wnid>/*.JPEG)") from None
    if not len(ds):
        raise DataError(f"{folder}: no images found in its class folders")
    idx = balanced_indices(np.asarray(ds.targets), subset, seed)
    ds = torch.utils.data.Subset(ds, idx.tolist())
    return EpochDataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=workers,
                           seed=seed, source="ImageNet (class folders)")


class EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose shuffle order is seeded by (seed, epoch), like TensorLoader's."""

    def __init__(self, ds, *, shuffle: bool, seed: int, source: str, **kw):
        self._g = torch.Generator()
        self.seed, self.source = seed, source
        super().__init__(ds, shuffle=shuffle, generator=self._g, **kw)

    def set_epoch(self, epoch: int) -> None:
        self._g.manual_seed(self.seed * 1_000_003 + epoch)

    def start_epoch(self, epoch: int, batch_size: int | None = None, channels_last: bool | None = None) -> None:
        if batch_size and batch_size != self.batch_size:
            raise DataError("batch-size adaptation needs the in-memory loader (CIFAR); ImageNet's streams at one size")
        self.set_epoch(epoch)

    def iterate(self, epoch: int, stream: int = 0, shard: bool = True):
        """One epoch's batches (``shard``: the TensorLoader's interface; this loader serves one process)."""
        self.set_epoch(epoch * 7 + stream)
        return iter(self)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.dataset)

    @property
    def size(self) -> int:
        return len(self.dataset)


def make_loaders(spec, device: torch.device, rank: int = 0, world: int = 1):
    """(train loader, test loader, data source string) for a RunSpec; ``rank`` of ``world`` processes
    (bench/distributed.py) takes its rows of every batch."""
    if spec.dataset in TEXT_DATASETS:
        from bench.text import text_loaders

        return text_loaders(spec, image_size(spec), device, rank, world)
    if spec.dataset == "imagenet":
        if world > 1:
            raise ConfigError("dataset imagenet: several processes are not supported yet (its streaming loader "
                              "has no sharding); run it as one process")
        train = imagenet_loader(spec.data_dir, True, spec.batch_size, spec.train_subset, spec.subset_seed)
        test = imagenet_loader(spec.data_dir, False, spec.eval_batch_size, spec.test_subset, spec.subset_seed)
        train.set_epoch(0)
        return train, test, train.source
    tr = load_cifar(spec.dataset, spec.data_dir, True, spec.train_subset, spec.subset_seed, spec.download)
    te = load_cifar(spec.dataset, spec.data_dir, False, spec.test_subset, spec.subset_seed, spec.download)
    train = TensorLoader(tr, spec.batch_size, spec.dataset, device, True, spec.seed, spec.channels_last,
                         rank=rank, world=world)
    test = TensorLoader(te, spec.eval_batch_size, spec.dataset, device, False, channels_last=spec.channels_last,
                        rank=rank, world=world)
    return train, test, tr.source


def write_fake_cifar(root: str | Path, dataset: str = "cifar10", n_train: int = 100, n_test: int = 50,
                     seed: int = 0) -> Path:
    """Write a small random dataset in torchvision's CIFAR format (for tests and examples)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_cls = NUM_CLASSES[dataset]
    folder = root / TORCHVISION_DIRS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    key = "labels" if dataset == "cifar10" else "fine_labels"

    def batch(n):
        # every class present once n >= classes (the loaders refuse a split that lacks one)
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(rng.permutation(np.arange(n) % n_cls))}

    if dataset == "cifar10":
        files = {f"data_batch_{i}": batch(n_train // 5) for i in range(1, 6)} | {"test_batch": batch(n_test)}
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        files = {"train": batch(n_train), "test": batch(n_test)}
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    files[meta[0]] = meta[1]
    for name, obj in files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)
    return root
