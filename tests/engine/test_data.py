import gzip
import hashlib
import json
import tracemalloc

import numpy as np
import pytest
import torch

from nas.engine.data import CHANNEL_IMAGE_MAGIC, DataError, IMAGE_MAGIC, LABEL_MAGIC, load_dataset, Dataset, read_idx
from nas.engine.splits import make_splits

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


@pytest.mark.parametrize("dims, message", [
    ((129794, 31252369, 4547599), "promises 18,446,744,073,709,551,614 bytes"),  # 2**64 - 2: int64 wraps to -2
    ((2**31, 2**31, 4), "promises 18,446,744,073,709,551,616 bytes"),  # 2**64: int64 wraps to 0
    ((0, 2**32 - 1, 2**32 - 1), r"shape \(0, 4294967295, 4294967295\): no data, in dimensions larger"),
])
@pytest.mark.parametrize("gz", [True, False])
def test_a_header_past_int64_is_refused_before_its_data_is_read(tmp_path, dims, message, gz):
    """Dims whose product wraps in int64 once made the reader read the whole stream (a MemoryError at
    1.8 GB); the size is counted in Python ints and refused from the header alone."""
    header = IMAGE_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    data = header + bytes(4_000_000)  # a little data: reading it would show in the peak below
    path = tmp_path / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=message) as info:
            read_idx(path, IMAGE_MAGIC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000 and str(path) in str(info.value) and "\n" not in str(info.value)


def write_idx(folder, name, array, magic=None):
    """Replace one of a folder's gzipped IDX files by ``array`` (uint8; an image file's magic by its dimensions)."""
    magic = magic or {1: LABEL_MAGIC, 3: IMAGE_MAGIC, 4: CHANNEL_IMAGE_MAGIC}[array.ndim]
    (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array, magic)))


@pytest.mark.parametrize("split, shape, message", [
    ("t10k", (0, 28, 28), "t10k-images-idx3-ubyte.gz: holds no images"),  # every trial divided by zero
    ("train", (0, 28, 28), "train-images-idx3-ubyte.gz: holds no images"),  # "--holdout: between 0 and -1"
    ("both", (5, 0, 0), "its images are 1-channel 0x0; a network takes 1 to 4096 channels of 1x1 to 1024x1024"),
    ("both", (5, 0, 3, 3), "its images are 0-channel 3x3"),
    ("both", (1, 1025, 1025), "its images are 1-channel 1025x1025"),
])
def test_a_split_without_images_or_with_images_no_network_takes_is_refused(tmp_path, split, shape, message):
    folder = write_mnist(tmp_path / "d", n_train=20, n_test=10)
    for prefix in (("train", "t10k") if split == "both" else (split,)):
        write_idx(folder, f"{prefix}-images-idx3-ubyte", np.zeros(shape, np.uint8))
        write_idx(folder, f"{prefix}-labels-idx1-ubyte", np.arange(shape[0]) % 2)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(folder, verify=False)
    assert "\n" not in str(info.value) and "`data_dir`" in str(info.value)


@pytest.mark.parametrize("text, message", [
    ('{"md5": "abc"}', '"md5" is \'abc\'; it must be an object from file name to the md5'),  # was an AttributeError
    ('{"md5": ["train-images-idx3-ubyte"]}', '"md5" is .*; it must be an object'),
    ('[{"name": "letters"}]', r"must be a JSON object with some of the keys name, classes, mean, std, md5, e\.g\."),
    ('"letters"', "must be a JSON object"),
    ('{"md5": {"train-images-idx3-ubyte.gz": "%s"}}' % ("0" * 32), '"md5" names the file .*without .gz'),
    ('{"md5": {"train-images-idx3-ubyte": "xyz"}}', '"md5" of train-images-idx3-ubyte must be 32 hexadecimal'),
    ('{"md5": {"train-images-idx3-ubyte": 5}}', "must be 32 hexadecimal digits"),
    ('{"std": 0}', '"std" is 0; it must be a finite number above 0'),  # was a NaN loss, "lower the learning rate"
    ('{"std": NaN}', '"std" is nan; it must be a finite number above 0'),
    ('{"std": -1}', '"std" is -1; it must be a finite number above 0'),  # was accepted
    ('{"std": [0.3, "a"]}', '"std" is .*; it must be a finite number above 0'),
    ('{"std": []}', '"std" is .*; it must be'),
    ('{"mean": Infinity}', '"mean" is .*; it must be a finite number'),
    ('{"mean": {"r": 0.5}}', '"mean" is .*; it must be a finite number'),
    ('{"mean": [0.1, 0.2, 0.3]}', '"mean" has 3 values, but the images have 1 channel; give one value per channel'),
    ('{"classes": "10"}', '"classes" is \'10\'; it must be a whole number from 2 to 4096'),  # was accepted
    ('{"classes": 10.0}', '"classes" is .*; it must be a whole number'),
    ('{"classes": true}', '"classes" is .*; it must be a whole number'),
    ('{"classes": 1}', '"classes" is .*; it must be a whole number from 2'),
    ('{"classes": 3}', 'a label is 4, but the data set has 3 classes; give "classes" at least 5, or leave it out'),
    ('{"name": 3}', '"name" is .*; it must be one line of text'),
    ('{"name": ""}', '"name" is .*; it must be one line of text'),
    ('{"name": "two\\nlines"}', '"name" is .*; it must be one line of text'),
    ('{"name": "letters", "colour": "grey"}', "unknown key 'colour'; it takes only name, classes, mean, std, md5"),
    ("[" * 1000 + "]" * 1000, "nested too deeply"),  # was a RecursionError
])
def test_every_key_of_the_description_is_checked(tmp_path, text, message):
    folder = write_mnist(tmp_path / "d", n_train=40, n_test=20, size=16, classes=5)
    (folder / "dataset.json").write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(folder)
    assert str(folder / "dataset.json") in str(info.value) and "\n" not in str(info.value)


def test_a_description_holds_for_every_channel_and_its_md5s_are_checked(tmp_path):
    folder = write_mnist(tmp_path / "d", n_train=40, n_test=20, size=16, classes=5)
    train = np.stack([synthetic_digits(40, 1, 16, 5)[0]] * 3, axis=1)  # N x 3 x S x S
    write_idx(folder, "train-images-idx3-ubyte", train)
    write_idx(folder, "t10k-images-idx3-ubyte", np.stack([synthetic_digits(20, 2, 16, 5)[0]] * 3, axis=1))
    md5 = hashlib.md5(idx_bytes(train, CHANNEL_IMAGE_MAGIC)).hexdigest()
    (folder / "dataset.json").write_text(json.dumps({"mean": 0.5, "std": [0.1, 0.2, 0.3],
                                                     "md5": {"train-images-idx3-ubyte": md5.upper()}}))
    info = load_dataset(folder).info
    assert info.channels == 3 and info.mean == (0.5, 0.5, 0.5) and info.std == (0.1, 0.2, 0.3)
    (folder / "dataset.json").write_text(json.dumps({"md5": {"train-images-idx3-ubyte": "0" * 32}}))
    with pytest.raises(DataError, match="contents differ"):
        load_dataset(folder)
    (folder / "dataset.json").write_text(json.dumps({"std": [0.1, 0.2]}))
    with pytest.raises(DataError, match='"std" has 2 values, but the images have 3 channels'):
        load_dataset(folder)


def test_blank_images_and_a_single_class_are_refused(tmp_path):
    folder = write_mnist(tmp_path / "d", n_train=40, n_test=20, size=16, classes=5)
    write_idx(folder, "train-labels-idx1-ubyte", np.zeros(40, np.uint8))
    write_idx(folder, "t10k-labels-idx1-ubyte", np.zeros(20, np.uint8))
    with pytest.raises(DataError, match="every label is 0: one class"):
        load_dataset(folder)
    folder = write_mnist(tmp_path / "e", n_train=40, n_test=20, size=16, classes=5)
    write_idx(folder, "train-images-idx3-ubyte", np.zeros((40, 16, 16), np.uint8))
    with pytest.raises(DataError, match=r'blank in a channel \(pixel std 0.0\), which would divide by 0; give "std"'):
        load_dataset(folder)


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
