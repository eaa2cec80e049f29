"""Finite image datasets: rendered images with their latents, and real datasets.

- :class:`RenderedDataset`: N images of :mod:`sithlib.dgp.images` with their latents and the
  shape as class label, for the finite-sample and data-diversity studies and for kNN /
  linear-probe accuracy.
- :func:`load_dataset`: CIFAR-10, CIFAR-100, STL-10 and an ImageFolder tree (the ImageNet-100
  layout) through torchvision. Downloads happen only with ``download=True``; missing data
  raises ``FileNotFoundError`` naming the folder and files expected.
- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits, a tiny real dataset
  that needs no download.
- :func:`to_tensors`: any of these as one pair of tensors on a device, which is what the
  training engine samples batches from.

Reading the data files is the one kind of file access the library does outside the results
store: it is data loading, read-only, in the places the user names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from sithlib.dgp.images import SHAPES, render, sample_latents


class ImageTensors(NamedTuple):
    """Images (n, 3, H, W), float in [0, 1], and integer labels (n,) (-1: unlabeled)."""

    #: Images, shape (n, 3, H, W), float in [0, 1].
    x: torch.Tensor
    #: Integer labels, shape (n,); -1 where unlabeled.
    y: torch.Tensor


class RenderedDataset(torch.utils.data.Dataset):
    """N rendered images, their latents and the shape label, held as tensors on a device.

    The latents are drawn on the CPU from ``seed`` (so the dataset is the same on every
    device) and rendered on ``device`` in chunks.

    Parameters
    ----------
    n : int
        Number of images, >= 1.
    size : int
        Image side in pixels.
    seed : int
        Seed of the latents.
    shapes : sequence of str, optional
        Shapes to draw from (all of :data:`sithlib.dgp.images.SHAPES` when None); the label
        is always the index into ``SHAPES``.
    edge : float
        Anti-aliasing edge width in pixels (see :func:`sithlib.dgp.images.render`).
    device : torch.device or str
        Where the tensors live.
    dtype : torch.dtype
        Floating dtype of images and latents.
    chunk : int
        Images rendered per call (bounds the renderer's memory).

    Attributes
    ----------
    x : Tensor, shape (n, 3, size, size)
        The images.
    z : Tensor, shape (n, 7)
        Their latents.
    y : Tensor, shape (n,)
        The shape index (int64).
    """

    classes = list(SHAPES)

    def __init__(self, n: int, size: int = 32, *, seed: int = 0,
                 shapes: Sequence[str] | None = None, edge: float = 1.0, device="cpu",
                 dtype: torch.dtype = torch.float32, chunk: int = 4096):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        gen = torch.Generator().manual_seed(int(seed))
        self.z = sample_latents(n, shapes=shapes, generator=gen, dtype=dtype).to(device)
        self.x = torch.cat([render(z, size, edge=edge) for z in self.z.split(chunk)])
        self.y = self.z[:, 6].long()
        self.size, self.seed = size, int(seed)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        """``(image, label, latents)`` of item i."""
        return self.x[i], self.y[i], self.z[i]

    def tensors(self) -> ImageTensors:
        """All images and labels."""
        return ImageTensors(self.x, self.y)


# ---------------------------------------------------------------------------------------------
# real datasets through torchvision

#: Names accepted by :func:`load_dataset`.
DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder")
_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}
_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10",
          "imagefolder": "ImageFolder"}


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100,
            "stl10": datasets.STL10}[name]


def _required_files(name: str, split: str) -> tuple[str, list[str]]:
    """The folder torchvision reads under ``root`` and the files it needs there."""
    cls = _torchvision_class(name)
    files = [f for f, _ in cls.train_list + cls.test_list]
    if name != "stl10":
        files.append(cls.meta["filename"])
    return cls.base_folder, files


def _without_md5(cls):
    """A subclass whose integrity checks only test that the files exist (md5 None)."""
    attrs = {"train_list": [[f, None] for f, _ in cls.train_list],
             "test_list": [[f, None] for f, _ in cls.test_list]}
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": None}
    return type(cls.__name__, (cls,), attrs)


def _default_transform(image_size: int | None):
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    if image_size is not None:
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True)])


def load_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    split: str = "train",
    download: bool = False,
    checksums: bool = True,
    transform=None,
    image_size: int | None = None,
):
    """A real image dataset through torchvision, with clear errors when it is missing.

    Expected layouts under ``root`` (what torchvision downloads and unpacks):

    - ``"cifar10"``: ``cifar-10-batches-py/`` with ``data_batch_1`` ... ``data_batch_5``,
      ``test_batch``, ``batches.meta`` (Python pickles);
    - ``"cifar100"``: ``cifar-100-python/`` with ``train``, ``test``, ``meta``;
    - ``"stl10"``: ``stl10_binary/`` with ``train_X.bin``, ``train_y.bin``, ``test_X.bin``,
      ``test_y.bin``, ``unlabeled_X.bin``;
    - ``"imagefolder"``: ``<split>/<class>/<image>``, e.g. ImageNet-100 as
      ``train/n01440764/*.JPEG`` and ``val/n01440764/*.JPEG`` (never downloaded).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str or path
        Folder that holds (or will hold) the data.
    split : str
        ``"train"`` or ``"test"``; STL-10 also ``"unlabeled"`` and ``"train+unlabeled"``
        (label -1 for unlabeled images); for an ImageFolder the subfolder, e.g. ``"val"``.
    download : bool
        Download the data if it is missing (needs internet; not for ImageFolder).
    checksums : bool
        Verify torchvision's md5 sums of the files (slow for STL-10's 2.6 GB unlabeled file).
        False only checks that the files exist, e.g. for re-packed copies.
    transform : callable, optional
        Applied to each PIL image; by default a float tensor (3, H, W) in [0, 1].
    image_size : int, optional
        ImageFolder only, with the default transform: resize the short side to this and
        centre-crop a square.

    Returns
    -------
    torch.utils.data.Dataset
        Items ``(image, label)``.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
    if name != "imagefolder" and split not in _SPLITS[name]:
        raise ValueError(f"split must be one of {list(_SPLITS[name])} for {name}, got {split!r}")
    if image_size is not None and (name != "imagefolder" or transform is not None):
        raise ValueError("image_size applies to the default transform of 'imagefolder' only")
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be None or an integer >= 1, got {image_size!r}")
    root = Path(root)
    transform = _default_transform(image_size) if transform is None else transform
    if name == "imagefolder":
        return _image_folder(root, split, download, transform)
    folder, files = _required_files(name, split)
    path = root / folder
    missing = [f for f in files if not (path / f).is_file()]
    if missing and not download:
        cls = _torchvision_class(name)
        raise FileNotFoundError(
            f"{_NAMES[name]} not found: expected the folder {path} with {', '.join(files)} "
            f"(missing: {', '.join(missing)}). On a machine with internet access pass "
            f"download=True to fetch {cls.url} into {root}, or copy the unpacked folder there.")
    cls = _torchvision_class(name)
    cls = cls if checksums else _without_md5(cls)
    kwargs = {"split": split} if name == "stl10" else {"train": split == "train"}
    try:
        return cls(str(root), transform=transform, download=download, **kwargs)
    except RuntimeError as err:
        if "corrupted" not in str(err):
            raise
        raise RuntimeError(
            f"{_NAMES[name]} files in {path} failed torchvision's md5 check (incomplete or "
            "re-packed). Download them again, or pass checksums=False to only check that they "
            "exist.") from err


def _image_folder(root: Path, split: str, download: bool, transform):
    from torchvision import datasets

    if download:
        raise ValueError("an ImageFolder cannot be downloaded; build the folder tree "
                         "(e.g. ImageNet-100: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) yourself")
    if not isinstance(split, str) or not split or os.sep in split:
        raise ValueError(f"split must name one subfolder of root, got {split!r}")
    path = root / split
    if not path.is_dir() or not any(p.is_dir() for p in path.iterdir()):
        raise FileNotFoundError(
            f"ImageFolder not found: expected class folders under {path}, laid out as "
            f"{path}/<class>/<image> (ImageNet-100: {root}/train/n01440764/*.JPEG and "
            f"{root}/val/n01440764/*.JPEG).")
    return datasets.ImageFolder(str(path), transform=transform)


# ---------------------------------------------------------------------------------------------
# tensors


def load_digits(size: int = 8, *, device="cpu", dtype: torch.dtype = torch.float32) -> ImageTensors:
    """scikit-learn's 1797 handwritten digits (bundled, no download) as RGB image tensors.

    Parameters
    ----------
    size : int
        Image side; the 8x8 originals are resized bilinearly (antialiased when shrinking).
    device : torch.device or str
        Device of the output.
    dtype : torch.dtype
        Floating dtype of the images.

    Returns
    -------
    ImageTensors
        x of shape (1797, 3, size, size) in [0, 1] (gray, 16 levels, repeated on the three
        channels), y the digit (int64).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    digits = sk_load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float64) / 16.0
    x = x.unsqueeze(1).to(dtype)
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=size < 8)
        x = x.clamp(0.0, 1.0)
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    return ImageTensors(x.expand(-1, 3, -1, -1).contiguous().to(device), y.to(device))


def to_tensors(dataset, *, device="cpu", dtype: torch.dtype = torch.float32,
               limit: int | None = None) -> ImageTensors:
    """A whole dataset as one pair of tensors (images, labels) on ``device``.

    CIFAR-10/100 and STL-10 are converted from their uint8 arrays in one step (their
    ``transform`` is not applied: the images are the raw pixels scaled to [0, 1]); a
    :class:`RenderedDataset` returns its tensors; any other dataset is read item by item,
    so its transform must return tensors of one shape.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Items ``(image, label, ...)``.
    device : torch.device or str
        Device of the output.
    dtype : torch.dtype
        Floating dtype of the images.
    limit : int, optional
        Keep only the first ``limit`` items.

    Returns
    -------
    ImageTensors
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if isinstance(dataset, RenderedDataset):
        return ImageTensors(dataset.x[:n].to(device, dtype), dataset.y[:n].to(device))
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        x = torch.from_numpy(np.ascontiguousarray(data[:n]))
        if x.shape[-1] == 3:  # CIFAR stores HWC, STL-10 CHW
            x = x.permute(0, 3, 1, 2)
        y = torch.as_tensor(np.asarray(labels[:n]), dtype=torch.int64)
        return ImageTensors((x.to(device).to(dtype) / 255).contiguous(), y.to(device))
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item[0], torch.Tensor):
            raise TypeError("the dataset's items must be tensors; give it a transform that "
                            f"returns tensors (item {i} holds {type(item[0]).__name__})")
        xs.append(item[0])
        ys.append(int(item[1]))
    if not xs:
        return ImageTensors(torch.empty(0, 3, 0, 0, device=device, dtype=dtype),
                            torch.empty(0, dtype=torch.int64, device=device))
    return ImageTensors(torch.stack(xs).to(device, dtype),
                        torch.tensor(ys, dtype=torch.int64, device=device))
