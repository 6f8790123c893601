"""Any IDX data set in MNIST's file layout: images of another size and another number of classes search,
train and export through the commands, the shapes and normalization taken from the files."""

import json
import subprocess

import pytest

from conftest import command, write_mnist

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")

ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"}


def run(*args):
    proc = subprocess.run([command(args[0]), *args[1:]], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_24x24_five_class_data_set_searches_trains_and_exports(tmp_path):
    data = write_mnist(tmp_path / "shapes", n_train=700, n_test=200, size=24, classes=5)
    storage = f"sqlite:///{tmp_path}/s.db"
    common = ["--storage", storage, "--study", "shapes", "--data-dir", str(data), "--device", "cpu"]
    out = run("nas-search", *common, "--trials", "3", "--epochs", "1", "--rungs", "none", "--seed", "1")
    assert "this run: trained 3" in out  # no reference: they are MNIST networks
    assert "validation 116 held out" in out  # the default holdout scales: a sixth of 700, not MNIST's 10,000
    assert "1 ep x 584 img" in out  # planned at the data's own size (700 - 116 held out), not MNIST's
    trained = json.loads(run("nas-train", *common, "--trial", "best", "--epochs", "1", "--json"))
    assert len(trained["test_acc"]) == 1 and 0 <= trained["test_acc"][0] <= 1
    run("nas-export", *common, "--no-retrain", "--out", str(tmp_path / "model"))
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["input"]["tensor"].startswith("float32, shape (N, 1, 24, 24)")
    assert metrics["output"]["tensor"] == "float32, shape (N, 5)" and metrics["input"]["data"] == "shapes"
    spec = json.loads((tmp_path / "model" / "spec.json").read_text())
    assert (spec["arch"]["in_size"], spec["arch"]["classes"]) == (24, 5)


def test_an_8x8_set_cuts_the_space_to_fit_and_scales_its_defaults(tmp_path):
    # 1,500 images of 8x8: MNIST's holdout (10,000) and three stages of max-pools do not fit it
    data = write_mnist(tmp_path / "tiny8", n_train=1500, n_test=200, size=8)
    storage = f"sqlite:///{tmp_path}/s.db"
    out = run("nas-search", "--storage", storage, "--trials", "4", "--epochs", "1", "--seed", "0",
              "--data-dir", str(data))
    assert "space mnist_20k cut to fit 8x8 images: head_pool false, stages 2" in out
    assert "validation 250 held out" in out and "this run: trained" in out and "failed 0" in out
    rungs = [line for line in out.splitlines() if line.strip().startswith("rung ")]
    labels = [line.split("(")[1].split(",")[1] for line in rungs if "(" in line]
    assert len(labels) == len(set(labels))  # no rung repeats another
    trained = json.loads(run("nas-train", "--storage", storage, "--trial", "best", "--epochs", "1", "--json",
                             "--data-dir", str(data)))
    assert 0 <= trained["test_acc"][0] <= 1
