"""An image data set in the four IDX files of MNIST's layout, checked (:mod:`nas.engine.splits` splits it
into train / validation / test).

Files are read from a folder (gzip-compressed or not): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. Each is checked
for its IDX magic number and count; what the engine needs to know comes from them: images of N x S x S
(one channel) or N x C x S x S, the classes from the labels, the normalization from the training
images. Files of MNIST's official shapes are checked against MNIST's md5s; another data set of that
shape (Fashion-MNIST, KMNIST) says so in a ``dataset.json`` beside the files (its name, and optionally
its classes, mean, std and md5s). Any problem is a :class:`DataError` with one line naming the file and
what to do. Without a folder, torchvision downloads MNIST (where there is internet).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import reprlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.arch.checks import is_int, is_number
from nas.arch.spec import MAX_CHANNELS, MAX_SIZE, MNIST_SHAPE
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
DESCRIPTION_KEYS = ("name", "classes", "mean", "std", "md5")  # all it may say (docs/guide.md#other-data-sets)
MAX_DESCRIPTION_BYTES = 100_000  # a few lines of JSON; a larger file is not a description
MD5 = re.compile(r"[0-9a-fA-F]{32}")
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
            size = promised_size(path, dims)
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


def promised_size(path: Path, dims: tuple[int, ...]) -> int:
    """The bytes of data an IDX header's shape promises, refused past MAX_IDX_BYTES before any is read.
    In Python ints: 32-bit dimensions multiply past int64, where np.prod wraps (to -2, say, and a read of
    -2 + 1 bytes reads the whole stream)."""
    size = math.prod(dims)
    if size > MAX_IDX_BYTES:
        raise DataError(f"{path}: its header promises {size:,} bytes of data, more than this tool reads "
                        f"({MAX_IDX_BYTES:,}); {FIX}")
    if math.prod(d for d in dims if d) > MAX_IDX_BYTES:  # numpy refuses to shape even no data past int64
        raise DataError(f"{path}: its header gives the shape {dims}: no data, in dimensions larger than this tool "
                        f"reads ({MAX_IDX_BYTES:,} bytes); {FIX}")
    return size


@dataclass(frozen=True)
class DataInfo:
    """What the engine and the spec need to know of a data set: its images' shape, classes, normalization."""

    name: str = "mnist"
    channels: int = MNIST_SHAPE[0]
    size: int = MNIST_SHAPE[1]
    classes: int = MNIST_SHAPE[2]
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
    check_images(paths, arrays)
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
    """The folder's ``dataset.json``, if it has one: what the data set is, every key checked."""
    path = folder / DESCRIPTION
    if not path.exists():
        return None
    from nas.system import check_nesting, json_object_pairs, read_text_file

    try:
        text = read_text_file(path, MAX_DESCRIPTION_BYTES, "data set description", "JSON")
        check_nesting(text, "the JSON")  # before the parser, whose recursion a deep file would exhaust
        described = json.loads(text, object_pairs_hook=json_object_pairs)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    return check_description(path, described)


def check_description(path: Path, described: Any) -> dict[str, Any]:
    """``dataset.json`` checked key by key against its contract (docs/guide.md#other-data-sets). What needs
    the files (the channels, the labels) is checked in :func:`data_info`."""
    keys = ", ".join(DESCRIPTION_KEYS)
    if not isinstance(described, dict):
        raise DataError(f'{path}: must be a JSON object with some of the keys {keys}, e.g. {{"name": "fashion-mnist"}}'
                        f"; got {reprlib.repr(described)}")
    for key in described:
        if key not in DESCRIPTION_KEYS:
            raise DataError(f"{path}: unknown key {reprlib.repr(key)}; it takes only {keys}: remove it or fix its name")
    checks = {"name": check_name, "classes": check_classes, "mean": check_mean, "std": check_std, "md5": check_md5s}
    return {key: checks[key](path, value) for key, value in described.items()}


def refused(path: Path, key: str, rule: str, value: Any) -> DataError:
    return DataError(f'{path}: "{key}" is {reprlib.repr(value)}; it must be {rule}')


def check_name(path: Path, name: Any) -> str:
    if not (isinstance(name, str) and name.strip() and name.isprintable()):  # it is printed in one-line reports
        raise refused(path, "name", 'one line of text, e.g. "fashion-mnist"', name)
    return name


def check_classes(path: Path, classes: Any) -> int:
    if not (is_int(classes) and 2 <= classes <= MAX_CHANNELS):  # a spec scores at most MAX_CHANNELS classes
        raise refused(path, "classes", f"a whole number from 2 to {MAX_CHANNELS} (e.g. 10), or left out (it is then "
                      "the largest label + 1)", classes)
    return classes


def check_mean(path: Path, mean: Any) -> Any:
    values = mean if isinstance(mean, list) else [mean]
    if not values or not all(is_number(v) for v in values):  # NaN or Infinity would train to NaN
        raise refused(path, "mean", "a finite number (of the training pixels scaled to [0, 1]), or a list of one per "
                      "channel; or left out (computed from the training images)", mean)
    return mean


def check_std(path: Path, std: Any) -> Any:
    values = std if isinstance(std, list) else [std]
    if not values or not all(is_number(v) and v > 0 for v in values):  # it divides the pixels: 0, NaN, -1 train to NaN
        raise refused(path, "std", "a finite number above 0 (of the training pixels scaled to [0, 1]), or a list of "
                      "one per channel; or left out (computed from the training images)", std)
    return std


def check_md5s(path: Path, md5s: Any) -> dict[str, str]:
    """File name -> md5, lowercased as hashlib writes it."""
    if not isinstance(md5s, dict):
        raise refused(path, "md5", 'an object from file name to the md5 of the uncompressed file, e.g. '
                      '{"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb"}', md5s)
    for file, digest in md5s.items():
        if file not in OFFICIAL_FILES:
            raise DataError(f'{path}: "md5" names the file {reprlib.repr(file)}; name one of '
                            f'{", ".join(OFFICIAL_FILES)} (without .gz: the md5 is of the uncompressed file)')
        if not (isinstance(digest, str) and MD5.fullmatch(digest)):
            raise DataError(f'{path}: "md5" of {file} must be 32 hexadecimal digits (the md5 of the uncompressed '
                            f"file), got {reprlib.repr(digest)}")
    return {file: digest.lower() for file, digest in md5s.items()}


def check_images(paths: dict[str, Path], arrays: dict[str, np.ndarray]) -> None:
    """Images a network can take: some in each split (no test image would score by dividing by zero, no
    training image would leave nothing to learn from or to hold out), square, of one size in both splits,
    with as many channels and pixels as a spec can take."""
    train_file = paths["train-images-idx3-ubyte"]
    train, test = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        if not len(arrays[name]):
            raise DataError(f"{paths[name]}: holds no images (shape {arrays[name].shape}); both splits need some; "
                            f"{FIX}")
    if train.shape[-1] != train.shape[-2] or test.shape[1:] != train.shape[1:]:
        raise DataError(f"{train_file.parent}: images must be square and the same size in both splits, got "
                        f"{train.shape[1:]} and {test.shape[1:]}")
    channels, size = (1 if train.ndim == 3 else train.shape[1]), train.shape[-1]
    if not (1 <= channels <= MAX_CHANNELS and 1 <= size <= MAX_SIZE):
        raise DataError(f"{train_file}: its images are {channels}-channel {size}x{size}; "
                        f"a network takes 1 to {MAX_CHANNELS} channels of 1x1 to {MAX_SIZE}x{MAX_SIZE} pixels; {FIX}")


def data_info(folder: Path, arrays: dict[str, np.ndarray], described: dict[str, Any] | None,
              is_mnist: bool) -> DataInfo:
    """The data set's shape, classes and normalization, from its files (and its description, whose keys
    :func:`check_description` checked on their own: here against the images and labels)."""
    images = arrays["train-images-idx3-ubyte"]
    channels = 1 if images.ndim == 3 else images.shape[1]
    largest = int(max(arrays["train-labels-idx1-ubyte"].max(), arrays["t10k-labels-idx1-ubyte"].max()))
    described = described or {}
    classes = described.get("classes", largest + 1)
    if largest >= classes:
        raise DataError(f'{folder / DESCRIPTION}: a label is {largest}, but the data set has {classes} classes; give '
                        f'"classes" at least {largest + 1}, or leave it out (it is then the largest label + 1)')
    if classes < 2:
        raise DataError(f"{folder}: every label is 0: one class, nothing to tell apart; a data set needs 2 or more; "
                        f"{FIX}")
    if is_mnist and not described:
        return DataInfo()
    mean = per_channel(folder, described, "mean", channels) or pixel_statistic(images, np.mean)
    std = per_channel(folder, described, "std", channels) or pixel_statistic(images, np.std)
    if min(std) <= 0:  # it divides the pixels: the loss would be NaN from the first step
        raise DataError(f'{folder}: the training images are blank in a channel (pixel std {min(std)}), which would '
                        f'divide by 0; give "std" in {DESCRIPTION}, or use images that are not blank')
    return DataInfo(described.get("name", folder.name), channels, int(images.shape[-1]), classes, mean, std)


def pixel_statistic(images: np.ndarray, statistic: Any) -> tuple[float, ...]:
    """``statistic`` (np.mean, np.std) of each channel's pixels scaled to [0, 1], to 4 decimals."""
    axes = (0, 1, 2) if images.ndim == 3 else (0, 2, 3)
    return tuple(np.atleast_1d(statistic(images / 255.0, axis=axes)).round(4).tolist())


def per_channel(folder: Path, described: dict[str, Any], key: str, channels: int) -> tuple[float, ...] | None:
    """``dataset.json``'s mean or std, one value per channel (a single number holds for every channel), or
    None where it gives none."""
    if key not in described:
        return None
    values = described[key]
    if not isinstance(values, list):
        return (float(values),) * channels
    if len(values) != channels:
        raise DataError(f'{folder / DESCRIPTION}: "{key}" has {len(values)} values, but the images have {channels} '
                        f"channel{'s' if channels > 1 else ''}; give one value per channel, or one number for all")
    return tuple(float(v) for v in values)


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
