"""An image data set in the four IDX files of MNIST's layout, checked, and split into train /
validation / test.

Files are read from a folder (gzip-compressed or not): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. Each is checked
for its IDX magic number and count; what the engine needs to know comes from them: images of N x S x S
(one channel) or N x C x S x S, the classes from the labels, the normalization from the training
images. Files of MNIST's official shapes are checked against MNIST's md5s; another data set of that
shape (Fashion-MNIST, KMNIST) says so in a ``dataset.json`` beside the files (its name, and optionally
its classes, mean, std and md5s). Any problem is a :class:`DataError` with one line naming the file and
what to do. Without a folder, torchvision downloads MNIST (where there is internet).

Validation is held out of the training images (seeded, the same number per class); the test images
are only ever used to report.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import SettingError

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions
CHANNEL_IMAGE_MAGIC = 2052  # unsigned bytes, 4 dimensions: N x C x S x S
# name -> (magic, shape, md5 of the uncompressed file)
OFFICIAL_FILES: dict[str, tuple[int, tuple[int, ...], str]] = {
    "train-images-idx3-ubyte": (IMAGE_MAGIC, (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (LABEL_MAGIC, (60000,), "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (IMAGE_MAGIC, (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (LABEL_MAGIC, (10000,), "27ae3e4e09519cfbb04c329615203637"),
}
DEFAULT_DOWNLOAD_ROOT = Path.home() / ".cache" / "nas-mnist"
MEAN, STD = 0.1307, 0.3081  # of MNIST's training images scaled to [0, 1]
DESCRIPTION = "dataset.json"  # beside the files: what a data set of MNIST's shape is, if not MNIST
DEFAULT_HOLDOUT = 10_000  # as large as the test set: validation and test accuracy are equally noisy
FIX = "copy the four official MNIST files there again, or point `data_dir` (or NAS_DATA_DIR) at a folder that has them"


class DataError(SettingError):
    """A data problem, described in one line that says what to do; ``name`` is the parameter at fault
    (the data folder unless said otherwise)."""

    def __init__(self, message: str, name: str = "data_dir") -> None:
        super().__init__(name, message)


MAX_IDX_BYTES = 100_000_000  # the largest official file is 47 MB uncompressed


def read_idx(path: Path, magic: int, shape: tuple[int, ...] | None = None, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (``.gz`` or not). ``shape`` and ``md5``, when given, must match exactly.
    Image files may also have 4 dimensions (N x C x S x S, magic 2052).

    The header is checked before the body is read, and no more than the header promises (plus
    one byte, to notice padding) is ever decompressed: memory stays bounded whatever the file holds.
    """
    kind = "image" if magic == IMAGE_MAGIC else "label"
    allowed = (IMAGE_MAGIC, CHANNEL_IMAGE_MAGIC) if magic == IMAGE_MAGIC else (magic,)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            found = int.from_bytes(f.read(4), "big") if path.stat().st_size else None
            ndim = (found or 0) & 0xFF
            header = found.to_bytes(4, "big") + f.read(4 * ndim) if found in allowed else b""
            if found not in allowed or len(header) < 4 + 4 * ndim:
                raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic}); {FIX}")
            dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            if shape is not None and dims != shape:
                raise DataError(f"{path}: holds shape {dims}, expected {shape}; {FIX}")
            size = int(np.prod(dims, dtype=np.int64))
            if size > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header promises {size:,} bytes of data, more than this tool reads "
                                f"({MAX_IDX_BYTES:,}); {FIX}")
            body = f.read(size + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({e}); {FIX}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); {FIX}") from None
    if len(body) != size:
        raise DataError(f"{path}: truncated or padded ({len(header) + len(body):,}{'+' if len(body) > size else ''} "
                        f"bytes uncompressed, expected {len(header) + size:,} for shape {dims}); {FIX}")
    if md5 is not None and hashlib.md5(header + body).hexdigest() != md5:
        raise DataError(f"{path}: contents differ from the official MNIST file (md5 "
                        f"{hashlib.md5(header + body).hexdigest()}, expected {md5}); {FIX}; for another data set "
                        f"of MNIST's shape (Fashion-MNIST, KMNIST), put a {DESCRIPTION} naming it beside the files")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


@dataclass(frozen=True)
class DataInfo:
    """What the engine and the spec need to know of a data set: its images' shape, classes, normalization."""

    name: str = "mnist"
    channels: int = 1
    size: int = 28
    classes: int = 10
    mean: tuple[float, ...] = (MEAN,)  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...] = (STD,)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, size, classes): what a spec must take and score."""
        return self.channels, self.size, self.classes

    def describe(self) -> str:
        return f"{self.name}: {self.channels}x{self.size}x{self.size} images, {self.classes} classes"


@dataclass(frozen=True)
class Dataset:
    train_images: torch.Tensor  # uint8, N x S x S (one channel) or N x C x S x S
    train_labels: torch.Tensor  # int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DataInfo = field(default_factory=DataInfo)


def find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: has no {name} (nor {name}.gz); {FIX}")


def data_files(data_dir: str | Path | None = None) -> dict[str, Path]:
    """The data files a run reads (those that are there), to keep every output off them."""
    data_dir = data_dir or os.environ.get("NAS_DATA_DIR")
    folder = Path(data_dir) if data_dir else DEFAULT_DOWNLOAD_ROOT / "MNIST" / "raw"
    found = {}
    for name in OFFICIAL_FILES:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                found[f"data file {path.name}"] = path
    return found


def load_dataset(data_dir: str | Path | None = None, verify: bool = True) -> Dataset:
    """Load the data set in ``data_dir`` (else ``$NAS_DATA_DIR``, else a torchvision download of MNIST).

    ``verify=False`` skips the md5 checks (for small test files); the IDX structure is always checked.
    """
    data_dir = data_dir or os.environ.get("NAS_DATA_DIR")
    folder = Path(data_dir) if data_dir else _download()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; point `data_dir` (or NAS_DATA_DIR) "
                        "at a folder holding the four IDX files")
    described = description(folder)
    paths = {name: find_file(folder, name) for name in OFFICIAL_FILES}
    shapes = {name: idx_shape(path) for name, path in paths.items()}
    official = all(shapes[name] == shape for name, (_, shape, _) in OFFICIAL_FILES.items())
    md5s = described.get("md5", {}) if described else ({n: m for n, (_, _, m) in OFFICIAL_FILES.items()} if official else {})
    arrays = {name: read_idx(paths[name], magic, md5=md5s.get(name) if verify else None)
              for name, (magic, _, _) in OFFICIAL_FILES.items()}
    for split in ("train", "t10k"):
        n_images, n_labels = len(arrays[f"{split}-images-idx3-ubyte"]), len(arrays[f"{split}-labels-idx1-ubyte"])
        if n_images != n_labels:
            raise DataError(f"{folder}: {split} has {n_images} images but {n_labels} labels; {FIX}")
    info = data_info(folder, arrays, described, official and verify)

    def tensor(name: str) -> torch.Tensor:
        t = torch.from_numpy(arrays[name].copy())
        return t.long() if "labels" in name else t

    return Dataset(tensor("train-images-idx3-ubyte"), tensor("train-labels-idx1-ubyte"),
                   tensor("t10k-images-idx3-ubyte"), tensor("t10k-labels-idx1-ubyte"), info)



def idx_shape(path: Path) -> tuple[int, ...] | None:
    """The shape an IDX file's header gives (None if it has no readable header)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = f.read(4 * ndim)
    except (OSError, EOFError, zlib.error):
        return None
    return tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(len(dims) // 4))


def description(folder: Path) -> dict[str, Any] | None:
    """The folder's ``dataset.json``, if it has one: what the data set is."""
    path = folder / DESCRIPTION
    if not path.exists():
        return None
    from nas.system import read_text_file

    try:
        described = json.loads(read_text_file(path, 100_000, "data set description", "JSON"))
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    allowed = {"name", "classes", "mean", "std", "md5"}
    if not isinstance(described, dict) or set(described) - allowed:
        raise DataError(f"{path}: must be a JSON object with some of {', '.join(sorted(allowed))}")
    return described


def data_info(folder: Path, arrays: dict[str, np.ndarray], described: dict[str, Any] | None,
              is_mnist: bool) -> DataInfo:
    """The data set's shape, classes and normalization, from its files (and its description)."""
    images = arrays["train-images-idx3-ubyte"]
    if images.shape[-1] != images.shape[-2] or arrays["t10k-images-idx3-ubyte"].shape[1:] != images.shape[1:]:
        raise DataError(f"{folder}: images must be square and the same size in both splits, got "
                        f"{images.shape[1:]} and {arrays['t10k-images-idx3-ubyte'].shape[1:]}")
    channels = 1 if images.ndim == 3 else images.shape[1]
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    described = described or {}
    classes = int(described.get("classes", int(labels.max()) + 1))
    if labels.max() >= classes:
        raise DataError(f"{folder}: a label is {int(labels.max())}, but the data set has {classes} classes")
    if is_mnist and not described:
        return DataInfo()
    axes = (0, 1, 2) if images.ndim == 3 else (0, 2, 3)
    mean = described.get("mean", (images / 255.0).mean(axis=axes, dtype=np.float64).round(4).tolist())
    std = described.get("std", (images / 255.0).std(axis=axes, dtype=np.float64).round(4).tolist())
    as_tuple = (lambda v: tuple(float(x) for x in (v if isinstance(v, list) else [v])))
    return DataInfo(str(described.get("name", folder.name)), channels, int(images.shape[-1]), classes,
                    as_tuple(mean), as_tuple(std))


def _download() -> Path:
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(DEFAULT_DOWNLOAD_ROOT), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure means the same thing here
        raise DataError(f"MNIST is not in {DEFAULT_DOWNLOAD_ROOT} and could not be downloaded "
                        f"({type(e).__name__}); point `data_dir` (or NAS_DATA_DIR) at a folder "
                        "holding the four MNIST files") from None
    return DEFAULT_DOWNLOAD_ROOT / "MNIST" / "raw"


@dataclass(frozen=True)
class Splits:
    """Images (uint8, N x S x S or N x C x S x S) and labels of each split; ``val_*`` are None without a
    holdout; ``info`` says what the images are (shape, classes, normalization)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DataInfo = field(default_factory=DataInfo)

    def to(self, device: torch.device | str) -> Splits:
        tensors = (getattr(self, f.name) for f in fields(self) if f.name != "info")
        return Splits(*(None if t is None else t.to(device) for t in tensors), info=self.info)

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def describe(self) -> str:
        val = f"{len(self.val_labels):,}" if self.val_labels is not None else "none"
        return f"train {len(self.train_labels):,}, validation {val}, test {len(self.test_labels):,}"


def make_splits(dataset: Dataset, holdout: int = 0, subset: int | None = None, seed: int = 0) -> Splits:
    """Hold out ``holdout`` training images for validation (seeded, equal per class), then keep
    the first ``subset`` of the rest for training (each class in proportion)."""
    labels = dataset.train_labels
    n = len(labels)
    if not 0 <= holdout < n:
        raise DataError(f"must be between 0 and {n - 1}, got {holdout}", "holdout")
    classes = torch.unique(labels).tolist()
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(n, dtype=torch.bool)
    if holdout:
        for rank, c in enumerate(classes):
            members = torch.nonzero(labels == c).flatten()
            take = holdout // len(classes) + (rank < holdout % len(classes))
            if take > len(members):
                raise DataError(f"{holdout} needs {take} images of class {c}, which has only {len(members)}", "holdout")
            is_val[members[torch.randperm(len(members), generator=generator)[:take]]] = True
    train_idx = torch.nonzero(~is_val).flatten()
    if subset is not None:
        if not 0 < subset <= len(train_idx):
            raise DataError(f"must be between 1 and {len(train_idx):,} (the training images left), got {subset}",
                            "subset")
        train_idx = stratified_first(train_idx, labels[train_idx], subset)
    val_idx = torch.nonzero(is_val).flatten()
    return Splits(
        dataset.train_images[train_idx], labels[train_idx],
        dataset.train_images[val_idx] if holdout else None, labels[val_idx] if holdout else None,
        dataset.test_images, dataset.test_labels, dataset.info,
    )


def stratified_first(indices: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The first images of each class, as many of each as its share of ``k`` (largest remainder)."""
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * k / len(labels)
    take = exact.floor().long()
    for i in torch.argsort(exact - take, descending=True)[: k - int(take.sum())]:
        take[i] += 1
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:t] for c, t in zip(classes, take)])
    return indices[keep.sort().values]
