import os
import shutil

import os
import numpy as np
import pytest
import torch

from bench.data import (JPEG_SOURCE, DataError, Split, TensorLoader, balanced_indices, load_cifar,
                        write_fake_cifar)


def test_balanced_indices():
    labels = np.repeat(np.arange(10), 100)  # class-major, like the JPEG copy
    idx = balanced_indices(labels, 55, seed=0)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.tolist() == [6] * 5 + [5] * 5
    assert np.array_equal(idx, balanced_indices(labels, 55, seed=0))
    assert not np.array_equal(idx, balanced_indices(labels, 55, seed=1))
    assert len(balanced_indices(labels, 0, 0)) == 1000
    with pytest.raises(DataError):
        balanced_indices(np.array([0] * 10 + [1]), 6, 0)  # class 1 has 1 image, 3 asked


def test_torchvision_format_roundtrip(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=100, n_test=40)
    split = load_cifar("cifar10", tmp_path, train=True, verify=False)
    assert split.images.shape == (100, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.source == "CIFAR10 (torchvision format)"
    write_fake_cifar(tmp_path, "cifar100", n_train=200, n_test=100)
    assert load_cifar("cifar100", tmp_path, train=False, verify=False).labels.max() < 100


def test_torchvision_format_checks_integrity(tmp_path):
    write_fake_cifar(tmp_path, "cifar10")  # random files: their MD5s are not CIFAR-10's
    with pytest.raises(DataError, match="MD5 mismatch"):
        load_cifar("cifar10", tmp_path, train=True)


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar("cifar10", tmp_path / "nowhere", train=True)
    assert "cifar-10-batches-py" in str(e.value) and "--download" in str(e.value)


def test_jpeg_copy_balanced_subset(cifar_dir):
    split = load_cifar("cifar10", cifar_dir, train=False, subset=200, seed=0)
    assert split.source == JPEG_SOURCE
    assert split.images.shape == (200, 3, 32, 32)
    assert torch.bincount(split.labels).tolist() == [20] * 10  # a prefix would be all airplanes


def test_jpeg_copy_corruption_detected(cifar_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(cifar_dir, copy)
    path = copy / "cifar10-jpegq75-test-jpegbytes.npz"
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="SHA256 mismatch"):
        load_cifar("cifar10", copy, train=False)


def _split(n=20):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10, "t")


def test_loader_crops_and_flips_windows_of_the_padded_image():
    split = _split()
    one = Split(split.images[:1], split.labels[:1], "t")
    ld = TensorLoader(one, 1, "cifar10", torch.device("cpu"), train=True, seed=0)
    src = torch.nn.functional.pad(one.images, (4,) * 4)[0].float()
    windows = [src[:, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
    windows += [w.flip(-1) for w in windows]
    seen = set()
    for epoch in range(30):
        (x, _), = list(ld.iterate(epoch))
        img = (x[0] * ld.std[0] + ld.mean[0]).round()
        match = [i for i, w in enumerate(windows) if torch.allclose(img, w, atol=1e-3)]
        assert match, "batch is not a crop (and maybe flip) of the padded image"
        seen.add(match[0])
    assert len(seen) > 10  # crops and flips actually vary


def test_loader_epochs_are_reproducible_and_differ():
    loader = TensorLoader(_split(), 5, "cifar10", torch.device("cpu"), train=True, seed=1)
    a = [x for x, _ in loader.iterate(0)]
    b = [x for x, _ in loader.iterate(0)]
    c = [x for x, _ in loader.iterate(1)]
    g = [x for x, _ in loader.iterate(0, stream=1)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))
    assert not all(torch.equal(p, q) for p, q in zip(a, g))
    assert len(loader) == 4 and loader.num_samples == 20


def test_eval_loader_keeps_order_and_last_batch():
    split = _split(23)
    loader = TensorLoader(split, 10, "cifar10", torch.device("cpu"), train=False)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, split.labels) and len(loader) == 3


def test_imagenet_class_folders(tmp_path):
    from PIL import Image

    from bench.data import imagenet_loader

    for split in ("train", "val"):
        for c in ("n01", "n02"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + i, 36), (i * 40, 100, 200)).save(d / f"{i}.JPEG")
    train = imagenet_loader(tmp_path, True, batch_size=2, subset=4, seed=0, workers=0, image_size=32)
    train.set_epoch(0)
    x, y = next(iter(train))
    assert x.shape == (2, 3, 32, 32) and set(y.tolist()) <= {0, 1} and train.size == 4
    val = imagenet_loader(tmp_path, False, batch_size=4, subset=0, seed=0, workers=0, image_size=32)
    assert sum(len(b[1]) for b in val) == 6
    with pytest.raises(DataError, match="class folders"):
        imagenet_loader(tmp_path / "none", True, 2, 0, 0, workers=0)


def test_upper_case_checksums_are_the_same_checksums(tmp_path, cifar_dir):
    """SHA256SUMS written in upper case (some tools do) verifies the same files."""
    from bench.data import verify_jpeg_copy

    for f in cifar_dir.glob("*.npz"):
        os.symlink(f, tmp_path / f.name)
    lines = [line.split() for line in (cifar_dir / "SHA256SUMS").read_text().splitlines() if line.strip()]
    (tmp_path / "SHA256SUMS").write_text("".join(f"{digest.upper()}  {name}\n" for digest, name in lines))
    verify_jpeg_copy(str(tmp_path))  # raises DataError on a mismatch
