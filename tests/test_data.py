import gzip
import hashlib

import pytest
import torch

from nas.engine.data import DataError, IMAGE_MAGIC, LABEL_MAGIC, load_dataset, make_splits, Dataset, read_idx

from conftest import idx_bytes, synthetic_digits, write_mnist


def test_reads_gzipped_and_plain_folders_alike(tmp_path):
    gz = load_dataset(write_mnist(tmp_path / "gz", gz=True), verify=False)
    plain = load_dataset(write_mnist(tmp_path / "plain", gz=False), verify=False)
    assert gz.train_images.shape == (1000, 28, 28) and gz.train_images.dtype == torch.uint8
    assert gz.test_labels.shape == (300,) and gz.test_labels.dtype == torch.int64
    assert torch.equal(gz.train_images, plain.train_images) and torch.equal(gz.test_labels, plain.test_labels)


def test_the_data_sets_shape_classes_and_normalization_come_from_its_files(tmp_path):
    """Not MNIST's shapes: nothing to check its md5 against; what the engine needs is read off the files."""
    folder = write_mnist(tmp_path / "other", n_train=600, n_test=200, size=16, classes=5)
    data = load_dataset(folder)
    assert data.info.shape == (1, 16, 5) and data.info.name == "other"
    pixels = data.train_images.double() / 255
    assert data.info.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-4)
    assert data.info.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-4)
    (folder / "dataset.json").write_text('{"name": "letters", "classes": 7, "mean": 0.5, "std": 0.25}')
    assert load_dataset(folder).info.shape == (1, 16, 7) and load_dataset(folder).info.mean == (0.5,)
    (folder / "dataset.json").write_text('{"classes": 3}')
    with pytest.raises(DataError, match="a label is 4, but the data set has 3 classes"):
        load_dataset(folder)


def test_md5_of_the_uncompressed_contents_is_checked(tmp_path):
    images, _ = synthetic_digits(20, 0)
    raw = idx_bytes(images, IMAGE_MAGIC)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    assert read_idx(path, IMAGE_MAGIC, (20, 28, 28), hashlib.md5(raw).hexdigest()).shape == (20, 28, 28)
    tampered = bytearray(raw)
    tampered[100] ^= 1
    path.write_bytes(gzip.compress(bytes(tampered)))
    with pytest.raises(DataError, match="contents differ from the official MNIST file"):
        read_idx(path, IMAGE_MAGIC, (20, 28, 28), hashlib.md5(raw).hexdigest())


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated gzip file"),  # cut .gz
    (lambda b: b"this is not gzip at all", "corrupt or truncated gzip file"),
    (lambda b: gzip.compress(gzip.decompress(b)[:-100]), "truncated or padded"),
    (lambda b: gzip.compress(LABEL_MAGIC.to_bytes(4, "big") + gzip.decompress(b)[4:]), "not an IDX image file"),
])
def test_damaged_files_get_one_line_naming_the_file(tiny_mnist_dir, damage, message):
    path = tiny_mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as info:
        load_dataset(tiny_mnist_dir, verify=False)
    text = str(info.value)
    assert "train-images-idx3-ubyte.gz" in text and "\n" not in text and "`data_dir`" in text  # how to fix it


def test_missing_file_and_missing_folder(tiny_mnist_dir, tmp_path):
    (tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte \(nor t10k-labels-idx1-ubyte.gz\)"):
        load_dataset(tiny_mnist_dir, verify=False)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_env_var_names_the_folder(tiny_mnist_dir, monkeypatch):
    monkeypatch.setenv("NAS_DATA_DIR", str(tiny_mnist_dir))
    assert len(load_dataset(verify=False).train_labels) == 1000


def fake_mnist(n=6000):
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    images = torch.arange(n, dtype=torch.int32).reshape(n, 1, 1).expand(n, 28, 28).remainder(256).to(torch.uint8)
    return Dataset(images, labels, images[:100], labels[:100])


def test_holdout_is_balanced_seeded_and_disjoint():
    m = fake_mnist()
    s = make_splits(m, holdout=1000, seed=3)
    assert len(s.val_labels) == 1000 and len(s.train_labels) == 5000
    assert torch.bincount(s.val_labels).tolist() == [100] * 10
    assert torch.equal(make_splits(m, holdout=1000, seed=3).val_labels, s.val_labels)
    # disjoint: together they are the training set (images encode their index mod 256: compare counts)
    joined = torch.cat([s.train_images[:, 0, 0], s.val_images[:, 0, 0]]).sort().values
    assert torch.equal(joined, m.train_images[:, 0, 0].sort().values)
    other = make_splits(m, holdout=1000, seed=4)
    assert not torch.equal(other.val_images, s.val_images)
    assert torch.equal(s.test_labels, m.test_labels)


def test_subset_takes_the_first_images_of_each_class_in_proportion():
    m = fake_mnist()
    s = make_splits(m, subset=103)
    assert len(s.train_labels) == 103 and s.val_labels is None
    counts = torch.bincount(s.train_labels, minlength=10)
    assert counts.max() - counts.min() <= 1
    first_of_class0 = torch.nonzero(m.train_labels == 0).flatten()[: int(counts[0])]
    assert torch.equal(s.train_images[s.train_labels == 0], m.train_images[first_of_class0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(holdout=-1), "holdout: must be between"),
    (dict(holdout=6000), "holdout: must be between"),
    (dict(subset=0), "subset: must be between"),
    (dict(holdout=1000, subset=5001), "subset: must be between 1 and 5,000"),
])
def test_bad_split_sizes(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_splits(fake_mnist(), **kwargs)


def test_real_mnist_passes_every_check(real_mnist_dir):
    m = load_dataset(real_mnist_dir)
    assert m.train_images.shape == (60000, 28, 28) and m.test_images.shape == (10000, 28, 28)
    assert abs(m.train_images.float().div(255).mean().item() - 0.1307) < 1e-3
    s = make_splits(m, holdout=10_000)
    assert torch.bincount(s.val_labels).tolist() == [1000] * 10
