"""End-to-end: the installed commands, as a user runs them."""

import json
import os
import subprocess

import pytest
import torch

from conftest import REPO_SPACE, command, write_mnist


def run(*args, ok=True, cwd=None):
    proc = subprocess.run([command(args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert proc.stdout == "" or "Traceback" not in proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("name", ["ref-19970", "ref-10066", "ref-19712", "ref-19750", "ref-18520"])
def test_show_json_gives_each_preset_its_count(name):
    out = json.loads(run("nas-show", "--preset", name, "--json").stdout)
    assert out["name"] == name and out["params"] == int(name[4:]) and out["flops"] > 1_000_000


def test_show_table_has_layers_and_totals():
    out = run("nas-show", "--preset", "ref-19712").stdout
    assert "conv 3x3 16->32 (no bias)" in out and "32x22x22" in out
    assert "total: 19,712 parameters, 4,591,514 FLOPs per image (fvcore" in out


def test_show_list_and_spec_file(tmp_path):
    assert run("nas-show", "--list").stdout.count("ref-") == 5
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps({"arch": {"layers": [{"op": "conv", "out": 10}, {"op": "gap"}]}}))
    out = json.loads(run("nas-show", "--spec", str(spec), "--json").stdout)
    assert out["name"] == "mine" and out["params"] == 100


def test_space_audit_json():
    out = json.loads(run("nas-show", "--space", str(REPO_SPACE), "--sample", "200", "--seed", "0", "--json").stdout)
    assert out["sampled"] == 200 and out["failed"] == 0 and out["accepted"] >= 100
    assert out["accepted"] + out["rejected"] == 200
    assert out["params"]["max"] < 20_000 and out["flops"]["min"] > 0


def test_bad_input_is_one_line_and_non_zero(tmp_path):
    assert_one_line_error(run("nas-show", "--preset", "ref-1", ok=False), "nas-show: error: unknown preset")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": {"layers": [{"op": "conv", "out": -3}, {"op": "gap"}]}}))
    assert_one_line_error(run("nas-show", "--spec", str(bad), ok=False), "layer 0: conv: channel count must be")
    bad.write_text(json.dumps({"arch": {"layers": [{"op": "conv", "out": 16}, {"op": "gap"}]}}))
    assert_one_line_error(run("nas-show", "--spec", str(bad), ok=False), "must end in 10 class scores")
    assert_one_line_error(run("nas-show", "--space", str(tmp_path / "none.yaml"), ok=False), "cannot read search space")


def test_train_errors(tmp_path):
    assert_one_line_error(run("nas-train", "--preset", "ref-10066", "--data-dir", str(tmp_path / "nowhere"), ok=False),
                          "does not exist")
    folder = write_mnist(tmp_path / "m")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    assert_one_line_error(run("nas-train", "--preset", "ref-10066", "--data-dir", str(folder), ok=False),
                          "train-images-idx3-ubyte.gz", "corrupt or truncated")
    if not torch.cuda.is_available():
        assert_one_line_error(run("nas-train", "--preset", "ref-10066", "--device", "cuda", ok=False),
                              "no CUDA GPU is visible")


def test_train_on_real_mnist_is_reproducible_per_seed_and_reports_each_seeds_spread(real_mnist_dir):
    args = ["nas-train", "--preset", "ref-10066", "--epochs", "1", "--subset", "2000", "--holdout", "1000",
            "--data-dir", str(real_mnist_dir), "--seeds", "7,8", "--json"]
    first = json.loads(run(*args).stdout)
    second = json.loads(run(*args).stdout)
    assert first["params"] == 10066 and first["epochs"] == 1 and first["device"] == "cpu" and first["seeds"] == [7, 8]
    # one epoch on 2,000 images: well above chance (0.1) on every CPU, though a seed may land under 0.5
    assert all(0.25 < a <= 1 for a in first["test_acc"]) and None not in first["val_acc"]
    assert first["test_acc"] == second["test_acc"] and first["train_loss"] == second["train_loss"]  # same seeds
    assert first["test_acc"][0] != first["test_acc"][1] and first["std"] > 0  # other seed, other run
    assert first["mean"] == pytest.approx(sum(first["test_acc"]) / 2)
    assert first["min"] == min(first["test_acc"]) and first["max"] == max(first["test_acc"])


def test_train_prints_epoch_lines_and_the_final_figure(real_mnist_dir):
    out = run("nas-train", "--preset", "ref-19970", "--epochs", "2", "--subset", "500", "--batch-size", "100",
              "--data-dir", str(real_mnist_dir)).stdout
    assert "epoch  1/2  loss" in out and "epoch  2/2  loss" in out and "test acc" in out
    assert "final (epoch 2): test acc" in out


def test_bench_needs_data_dir():
    env_free = {k: v for k, v in os.environ.items() if k != "NAS_DATA_DIR"}
    proc = subprocess.run([command("nas-bench"), "--device", "cpu"], capture_output=True, text=True, env=env_free)
    assert_one_line_error(proc, "nas-bench needs --data-dir")


def test_export_no_retrain_of_a_duplicate_writes_the_weights_of_the_trial_it_copied(tmp_path, real_mnist_dir):
    import optuna

    from nas.store.artifacts import artifact_dir, load_weights
    from nas.search.settings import SearchConfig
    from nas.store.record import TrialRecord
    from nas.space.space import space_file
    from nas.search.opening import create_or_finish, read_search
    from nas.search.run import run_search
    from nas.space.space import SearchSpace
    from nas.store.storage import make_storage
    from nas.store.study import enqueue

    storage = f"sqlite:///{tmp_path}/d.db"
    config = SearchConfig(storage=storage, study="d", trials=2, device="cpu", seed=0, verify_data=False,
                          data_dir=str(write_mnist(tmp_path / "mnist")),
                          settings=dict(epochs=1, rungs=(), holdout=200, subset=300, references=False))
    create_or_finish(config, read_search(config), make_storage(storage))
    study = optuna.load_study(study_name="d", storage=storage)
    same = SearchSpace.from_file(space_file()).references["ref-10066"]
    for _ in range(2):
        enqueue(study, same, TrialRecord())
    run_search(config)
    first, copy = study.get_trials()[:2]
    assert TrialRecord.of(copy).outcome == "duplicate" and TrialRecord.of(copy).duplicate_of == first.number
    out = run("nas-export", "--storage", storage, "--study", "d", "--trial", str(copy.number), "--no-retrain",
              "--out", str(tmp_path / "dup"), "--data-dir", str(real_mnist_dir)).stdout
    assert f"trial {copy.number} of 'd'" in out and "not retrained" in out
    exported = torch.load(tmp_path / "dup" / "model.pt", weights_only=False)["state_dict"]
    original = load_weights(first, study, artifact_dir(storage))
    assert exported.keys() == original.keys() and all(torch.equal(exported[k], original[k]) for k in exported)


def test_a_refused_times_suggestion_replaces_epochs_subset_and_study_whole(tmp_path):
    from nas.cli.timing import fitting_command
    from nas.search.settings import SearchConfig

    given = ["--minutes", "3", "--epochs", "15", "--threads", "1", "--subset=20000", "--study", "first", "--data-dir",
             "my data"]
    config = SearchConfig(storage=f"sqlite:///{tmp_path}/s.db", study="first")
    assert fitting_command(given, config, 2, 5000) == ("nas-search --minutes 3 --threads 1 --data-dir 'my data' "
                                                       "--study first-2ep-5k --epochs 2 --subset 5000")
