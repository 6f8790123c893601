"""Shared fixtures: small IDX files made here, so unit tests need no downloaded data.

The suite runs in two processes (pytest-xdist, one per core): each test process and every command it
starts trains on one thread, so the two never fight over the cores. The tests that need PostgreSQL
run one after another in one process (one of them restarts the server): their modules are marked
``xdist_group("postgresql")``.
"""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported here or in a command a test starts
import torch  # noqa: E402

torch.set_num_threads(1)

from nas.engine.data import IMAGE_MAGIC, LABEL_MAGIC

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int, size: int = 28, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable stand-ins for digits: class c is a bright square at a place of its own, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, size, size))
    side, edge, down, across = 7 * size // 28, 3 * size // 28, 8 * size // 28, 6 * size // 28
    for i, c in enumerate(labels):
        r, col = edge + down * (c // 4), edge + across * (c % 4)
        images[i, r:r + side, col:col + side] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_mnist(folder: Path, n_train: int = 1000, n_test: int = 300, gz: bool = True, size: int = 28,
                classes: int = 10) -> Path:
    """The four IDX files of MNIST's layout, of synthetic images (``size`` x ``size``, ``classes`` classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_digits(n_train, 1, size, classes), synthetic_digits(n_test, 2, size, classes)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        for name, array, magic in ((f"{prefix}-images-idx3-ubyte", images, IMAGE_MAGIC),
                                   (f"{prefix}-labels-idx1-ubyte", labels, LABEL_MAGIC)):
            data = idx_bytes(array, magic)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def tiny_mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "mnist")


@pytest.fixture
def real_mnist_dir() -> Path:
    if not (REAL_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {REAL_MNIST}")
    return REAL_MNIST


def command(name: str) -> str:
    """The installed console script beside this Python (the venv need not be activated)."""
    import sys

    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
REPO_SPACE = SPACES / "mnist_20k.yaml"
SPACE_FILES = sorted(SPACES.glob("*.yaml"))


PG = dict(host="127.0.0.1", port=5432)
PG_PASSWORD = "s3cret-pw"  # trust authentication accepts any password; it must never be printed


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed (pip install -e '.[test]')")
    try:
        admin = psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG)
    except psycopg.OperationalError as e:
        pytest.skip(f"no PostgreSQL server answers at 127.0.0.1:5432 ({str(e).strip().splitlines()[0]})")
    name = f"nas_test_{uuid.uuid4().hex[:10]}"
    user = admin.info.user
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    yield f"postgresql://{user}:{PG_PASSWORD}@127.0.0.1:5432/{name}"
    # A new connection: a test may have restarted the server under the old one.
    with psycopg.connect(dbname="postgres", connect_timeout=30, autocommit=True, **PG) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
