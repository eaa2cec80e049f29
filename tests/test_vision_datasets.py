"""Rendered datasets, and the torchvision adapters on small fake datasets written here in the
exact on-disk formats (CIFAR python pickles, STL-10 binaries, an ImageFolder tree)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits as sk_load_digits
from torchvision import datasets as tvd

from sithlib.dgp import datasets as D
from sithlib.dgp.images import SHAPES, render


def fake_images(n, side, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)


def write_cifar(root, hundred=False, per_batch=6):
    """CIFAR's python version: pickled dicts whose 'data' rows are 1024 R, 1024 G, 1024 B
    values (row-major 32 x 32), with the label list under 'labels' or 'fine_labels'."""
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + [
        "test_batch"]
    classes = 100 if hundred else 10
    written = {}
    for k, name in enumerate(names):
        x = fake_images(per_batch, 32, k)
        y = [(3 * k + i) % classes for i in range(per_batch)]
        entry = {"batch_label": name, "data": x.reshape(per_batch, 3072),
                 "filenames": [f"img_{k}_{i}.png" for i in range(per_batch)]}
        if hundred:
            entry.update(fine_labels=y, coarse_labels=[c // 5 for c in y])
        else:
            entry["labels"] = y
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (x, y)
    meta = ({"fine_label_names": [f"fine{i}" for i in range(100)],
             "coarse_label_names": [f"coarse{i}" for i in range(20)]} if hundred else
            {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
             "num_vis": 3072})
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


def write_stl10(root):
    """STL-10's binaries: uint8 images of 3 x 96 x 96, each channel stored column-major,
    labels as uint8 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for k, split in enumerate(("train", "test", "unlabeled")):
        x = fake_images(3, 96, 10 + k)
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        y = np.array([(k + i) % 10 for i in range(3)], dtype=np.uint8)
        if split != "unlabeled":
            (y + 1).tofile(folder / f"{split}_y.bin")
        written[split] = (x, y)
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return written


def write_image_folder(root, split="train"):
    """The ImageNet layout: <split>/<wnid>/<image>, classes indexed in sorted order."""
    written = []
    for c, wnid in enumerate(("n01440764", "n01443537")):
        (root / split / wnid).mkdir(parents=True)
        for i in range(2):
            x = fake_images(1, 12, 20 + 2 * c + i)[0]
            Image.fromarray(x.transpose(1, 2, 0)).save(root / split / wnid / f"{wnid}_{i}.png")
            written.append((x, c))
    return written


# ---------------------------------------------------------------------------------------------
# rendered


def test_rendered_dataset():
    ds = D.RenderedDataset(50, 32, seed=3, chunk=16)
    assert len(ds) == 50 and ds.x.shape == (50, 3, 32, 32) and ds.z.shape == (50, 7)
    assert ds.y.dtype == torch.int64 and torch.equal(ds.y, ds.z[:, 6].long())
    torch.testing.assert_close(ds.x, render(ds.z, 32), atol=1e-6, rtol=0)
    x, y, z = ds[7]
    assert torch.equal(x, ds.x[7]) and y == ds.y[7] and torch.equal(z, ds.z[7])
    again = D.RenderedDataset(50, 32, seed=3)
    assert torch.equal(again.z, ds.z) and torch.equal(again.x, ds.x)
    assert not torch.equal(D.RenderedDataset(50, 32, seed=4).z, ds.z)
    assert ds.classes == list(SHAPES)
    hearts = D.RenderedDataset(20, 16, shapes=("heart",))
    assert (hearts.y == SHAPES.index("heart")).all()
    t = D.to_tensors(ds, limit=10)
    assert torch.equal(t.x, ds.x[:10]) and torch.equal(t.y, ds.y[:10])
    loader = torch.utils.data.DataLoader(ds, batch_size=20)
    xb, yb, zb = next(iter(loader))
    assert xb.shape == (20, 3, 32, 32) and torch.equal(zb, ds.z[:20])
    for bad in (dict(n=0), dict(n=2.0), dict(n=3, chunk=0)):
        with pytest.raises(ValueError):
            D.RenderedDataset(**bad)


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_from_pickles(tmp_path, hundred):
    written = write_cifar(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    train = D.load_dataset(name, tmp_path, checksums=False)
    test = D.load_dataset(name, tmp_path, split="test", checksums=False)
    train_names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    x_ref = np.concatenate([written[n][0] for n in train_names])
    y_ref = sum((written[n][1] for n in train_names), [])
    assert len(train) == len(x_ref) and len(test) == 6
    t = D.to_tensors(train)
    assert t.x.shape == (len(x_ref), 3, 32, 32) and t.x.dtype == torch.float32
    assert torch.equal((t.x * 255).round().to(torch.uint8), torch.from_numpy(x_ref))
    assert t.y.tolist() == y_ref
    img, label = train[4]  # item path: default transform gives a float tensor in [0, 1]
    assert torch.equal((img * 255).round().to(torch.uint8), torch.from_numpy(x_ref[4]))
    assert label == y_ref[4]
    x_test, y_test = written["test" if hundred else "test_batch"]
    t = D.to_tensors(test, device="cpu", dtype=torch.float64, limit=2)
    assert t.x.dtype == torch.float64 and t.y.tolist() == y_test[:2]
    assert torch.equal((t.x * 255).round().to(torch.uint8), torch.from_numpy(x_test[:2]))
    assert train.classes[0] == ("fine0" if hundred else "class0")


def test_fake_cifar_fails_the_default_md5_check_with_a_clear_error(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(RuntimeError, match="md5.*checksums=False"):
        D.load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("name, folder, a_file", [
    ("cifar10", "cifar-10-batches-py", "data_batch_1"), ("cifar100", "cifar-100-python", "meta"),
    ("stl10", "stl10_binary", "unlabeled_X.bin"),
])
def test_missing_data_names_the_expected_path(tmp_path, name, folder, a_file):
    with pytest.raises(FileNotFoundError) as err:
        D.load_dataset(name, tmp_path / "data")
    msg = str(err.value)
    assert str(tmp_path / "data" / folder) in msg and a_file in msg and "download=True" in msg


def test_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):
        calls.append(self.root)
        write_cifar(tmp_path)

    monkeypatch.setattr(tvd.CIFAR10, "download", fake_download)
    with pytest.raises(FileNotFoundError):
        D.load_dataset("cifar10", tmp_path)
    assert calls == []
    ds = D.load_dataset("cifar10", tmp_path, download=True, checksums=False)
    assert calls == [str(tmp_path)] and len(ds) == 30


# ---------------------------------------------------------------------------------------------
# STL-10


def test_stl10_from_binaries(tmp_path):
    written = write_stl10(tmp_path)
    for split in ("train", "test"):
        ds = D.load_dataset("stl10", tmp_path, split=split, checksums=False)
        x, y = written[split]
        t = D.to_tensors(ds)
        assert t.x.shape == (3, 3, 96, 96)
        assert torch.equal((t.x * 255).round().to(torch.uint8), torch.from_numpy(x))
        assert t.y.tolist() == y.tolist()  # 0-based
        img, label = ds[1]
        assert torch.equal((img * 255).round().to(torch.uint8), torch.from_numpy(x[1]))
        assert label == y[1]
    unl = D.to_tensors(D.load_dataset("stl10", tmp_path, split="unlabeled", checksums=False))
    assert torch.equal((unl.x * 255).round().to(torch.uint8),
                       torch.from_numpy(written["unlabeled"][0]))
    assert (unl.y == -1).all()
    both = D.load_dataset("stl10", tmp_path, split="train+unlabeled", checksums=False)
    assert len(both) == 6
    with pytest.raises(RuntimeError, match="md5"):
        D.load_dataset("stl10", tmp_path)


# ---------------------------------------------------------------------------------------------
# ImageFolder


def test_image_folder_tree(tmp_path):
    written = write_image_folder(tmp_path, "train")
    ds = D.load_dataset("imagefolder", tmp_path, split="train")
    assert ds.classes == ["n01440764", "n01443537"] and len(ds) == 4
    t = D.to_tensors(ds)
    assert t.x.shape == (4, 3, 12, 12)
    assert torch.equal((t.x * 255).round().to(torch.uint8),
                       torch.from_numpy(np.stack([x for x, _ in written])))
    assert t.y.tolist() == [c for _, c in written]
    small = D.load_dataset("imagefolder", tmp_path, split="train", image_size=8)
    assert small[0][0].shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "val")):
        D.load_dataset("imagefolder", tmp_path, split="val")
    with pytest.raises(ValueError):
        D.load_dataset("imagefolder", tmp_path, download=True)
    raw = D.load_dataset("imagefolder", tmp_path, transform=lambda im: im)
    with pytest.raises(TypeError, match="transform"):
        D.to_tensors(raw)


# ---------------------------------------------------------------------------------------------
# digits and argument checks


def test_digits_offline():
    ref = sk_load_digits()
    d = D.load_digits()
    assert d.x.shape == (1797, 3, 8, 8) and d.x.dtype == torch.float32
    torch.testing.assert_close(d.x[:, 0].double(), torch.from_numpy(ref.images) / 16)
    assert torch.equal(d.x[:, 0], d.x[:, 2]) and d.y.tolist() == ref.target.tolist()
    big = D.load_digits(32)
    assert big.x.shape == (1797, 3, 32, 32) and big.x.min() >= 0 and big.x.max() <= 1
    # upsampling keeps each image's mean ink (bilinear, half-pixel centres)
    torch.testing.assert_close(big.x.mean((2, 3)), d.x.mean((2, 3)), atol=0.03, rtol=0)
    assert D.load_digits(4).x.shape == (1797, 3, 4, 4)
    with pytest.raises(ValueError):
        D.load_digits(0)


@pytest.mark.parametrize("kwargs", [
    dict(name="mnist"), dict(name="cifar10", split="val"), dict(name="stl10", split="extra"),
    dict(name="cifar10", image_size=32), dict(name="imagefolder", image_size=0),
    dict(name="imagefolder", split=""),
])
def test_load_dataset_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        D.load_dataset(root=tmp_path, **kwargs)


def test_to_tensors_bad_limit():
    with pytest.raises(ValueError):
        D.to_tensors(D.RenderedDataset(2, 8), limit=-1)
