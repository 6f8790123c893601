"""MNIST from the four official IDX files, checked, and split into train / validation / test.

Files are read from a folder (gzip-compressed or not); each is checked for its IDX magic number,
shape and count and for the md5 of its uncompressed contents, and any problem is a
:class:`DataError` with one line naming the file and what to do. Without a folder, torchvision
downloads MNIST (where there is internet) and the same checks run on what it wrote.

Validation is held out of the 60,000 training images (seeded, the same number per class); the
10,000 test images are only ever used to report.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from nas.errors import SettingError

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
# name -> (magic, shape, md5 of the uncompressed file)
OFFICIAL_FILES: dict[str, tuple[int, tuple[int, ...], str]] = {
    "train-images-idx3-ubyte": (IMAGE_MAGIC, (60000, 28, 28), "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (LABEL_MAGIC, (60000,), "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (IMAGE_MAGIC, (10000, 28, 28), "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (LABEL_MAGIC, (10000,), "27ae3e4e09519cfbb04c329615203637"),
}
DEFAULT_DOWNLOAD_ROOT = Path.home() / ".cache" / "nas-mnist"
MEAN, STD = 0.1307, 0.3081  # of the training images scaled to [0, 1]
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

    The header is checked before the body is read, and no more than the header promises (plus
    one byte, to notice padding) is ever decompressed: memory stays bounded whatever the file holds.
    """
    kind = "image" if magic == IMAGE_MAGIC else "label"
    ndim = 3 if magic == IMAGE_MAGIC else 1
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
            if found != magic or len(header) < 4 + 4 * ndim:
                raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic}); {FIX}")
            dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            if shape is not None and dims != shape:
                raise DataError(f"{path}: holds shape {dims}, expected {shape}; {FIX}")
            size = int(np.prod(dims, dtype=np.int64))
            if size > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header promises {size:,} bytes of data, more than any MNIST file; {FIX}")
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
                        f"{hashlib.md5(header + body).hexdigest()}, expected {md5}); {FIX}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


@dataclass(frozen=True)
class Mnist:
    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor


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


def load_mnist(data_dir: str | Path | None = None, verify: bool = True) -> Mnist:
    """Load MNIST from ``data_dir`` (else ``$NAS_DATA_DIR``, else a torchvision download).

    ``verify=False`` skips the official shape and md5 checks (for small test files); the IDX
    structure is always checked.
    """
    data_dir = data_dir or os.environ.get("NAS_DATA_DIR")
    folder = Path(data_dir) if data_dir else _download()
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; point `data_dir` (or NAS_DATA_DIR) "
                        "at a folder holding the four MNIST files")
    arrays = {}
    for name, (magic, shape, md5) in OFFICIAL_FILES.items():
        arrays[name] = read_idx(find_file(folder, name), magic, *((shape, md5) if verify else ()))
    for split in ("train", "t10k"):
        n_images, n_labels = len(arrays[f"{split}-images-idx3-ubyte"]), len(arrays[f"{split}-labels-idx1-ubyte"])
        if n_images != n_labels:
            raise DataError(f"{folder}: {split} has {n_images} images but {n_labels} labels; {FIX}")
    def tensor(name: str) -> torch.Tensor:
        t = torch.from_numpy(arrays[name].copy())
        return t.long() if "labels" in name else t

    return Mnist(tensor("train-images-idx3-ubyte"), tensor("train-labels-idx1-ubyte"),
                 tensor("t10k-images-idx3-ubyte"), tensor("t10k-labels-idx1-ubyte"))


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
    """Images (uint8, N x 28 x 28) and labels of each split; ``val_*`` are None without a holdout."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device: torch.device | str) -> Splits:
        return Splits(*(None if t is None else t.to(device) for t in (getattr(self, f.name) for f in fields(self))))

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def describe(self) -> str:
        val = f"{len(self.val_labels):,}" if self.val_labels is not None else "none"
        return f"train {len(self.train_labels):,}, validation {val}, test {len(self.test_labels):,}"


def make_splits(mnist: Mnist, holdout: int = 0, subset: int | None = None, seed: int = 0) -> Splits:
    """Hold out ``holdout`` training images for validation (seeded, equal per class), then keep
    the first ``subset`` of the rest for training (each class in proportion)."""
    labels = mnist.train_labels
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
        mnist.train_images[train_idx], labels[train_idx],
        mnist.train_images[val_idx] if holdout else None, labels[val_idx] if holdout else None,
        mnist.test_images, mnist.test_labels,
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
