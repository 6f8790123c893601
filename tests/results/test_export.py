"""Export folders: every format checked against PyTorch before anything is written, all or nothing."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from nas.results import export as export_module
from nas.arch.builder import build_model
from nas.errors import SettingError
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.trainer import accuracy, train
from nas.results.export import check_destination, export_folder, ExportError, FILES, load_model, MARK
from nas.system import atomic_write
from nas.arch.presets import load_preset
from nas.arch.candidate import Candidate


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("export")]  # its tests share one module fixture: build it once


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_mnist

    folder = write_mnist(tmp_path_factory.mktemp("m") / "mnist")
    data = make_splits(load_dataset(folder, verify=False))
    candidate = load_preset("ref-10066")
    result = train(candidate.arch, candidate.recipe.compressed(1), data, "cpu", seed=3)
    return candidate, result.model, data, folder


def test_the_folder_holds_five_checked_files_with_ordinary_permissions(trained, tmp_path):
    candidate, model, data, _ = trained
    out = tmp_path / "best"
    result = export_folder(model, candidate, {"params": 10066, "test_acc": 0.5}, out, data.test_images[:200])
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, MARK])
    assert [p.format for p in result.parity] == ["model.pt2", "model.onnx"] and all(p.ok for p in result.parity)
    assert all(p.images == 200 and p.same_class == 200 and p.max_abs_diff < 1e-4 for p in result.parity)
    for name in FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644  # readable by others, as files usually are
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"]["mean"] == 0.1307 and metrics["input"]["std"] == 0.3081
    assert "log-probabilities" in metrics["output"]["meaning"] and metrics["parity"]["model.onnx"]["same_class"] == 200
    latency = metrics["latency"]  # what a deployer pays: onnxruntime, one image, one thread
    assert latency == result.latency and latency["batch"] == 1 and 0 < latency["median_ms"] <= latency["p90_ms"]
    assert Candidate.from_json((out / "spec.json").read_text()).arch == candidate.arch
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["input"]["preprocess"].startswith("x = (image / 255") and payload["metrics"]["params"] == 10066
    loaded, info = load_model(out / "model.pt")
    assert abs(accuracy(loaded, data.test_images, data.test_labels) - accuracy(model, data.test_images, data.test_labels)) \
        <= 1 / len(data.test_labels)


def test_the_programs_run_without_this_package(trained, tmp_path):
    candidate, model, data, folder = trained
    out = tmp_path / "best"
    export_folder(model, candidate, {}, out, data.test_images[:100])
    script = f"""
import sys; sys.modules['nas'] = None
import gzip, numpy as np, torch, onnxruntime as ort
raw = gzip.open({str(folder / 't10k-images-idx3-ubyte.gz')!r}).read()
x = ((np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:100] / 255 - 0.1307) / 0.3081).astype(np.float32)[:, None]
a = torch.export.load({str(out / 'model.pt2')!r}).module()(torch.from_numpy(x)).argmax(1).numpy()
s = ort.InferenceSession({str(out / 'model.onnx')!r})
b = s.run(None, {{s.get_inputs()[0].name: x[:37]}})[0].argmax(1)  # another batch size: the batch is dynamic
print(int((a[:37] == b).all()), len(a))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "100"]


def test_an_existing_folder_needs_force_and_a_failed_export_leaves_it_untouched(trained, tmp_path, monkeypatch):
    candidate, model, data, _ = trained
    out = tmp_path / "best"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(SettingError, match="already exists and is not empty; pass `force`"):
        export_folder(model, candidate, {}, out, data.test_images[:50])
    with pytest.raises(SettingError, match="is not a folder nas-export wrote"):  # force replaces only an export
        export_folder(model, candidate, {}, out, data.test_images[:50], force=True)
    (out / "mine.txt").unlink()
    export_folder(model, candidate, {"run": 1}, out, data.test_images[:50])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_module, "_write_onnx", broken)
    with pytest.raises(RuntimeError):
        export_folder(model, candidate, {"run": 2}, out, data.test_images[:50], force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    monkeypatch.undo()
    export_folder(model, candidate, {"run": 2}, out, data.test_images[:50], force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, MARK])
    assert '"run": 2' in (out / "metrics.json").read_text()


def test_a_format_that_disagrees_is_not_written(trained, tmp_path, monkeypatch):
    candidate, model, data, _ = trained
    real = export_module._compare
    monkeypatch.setattr(export_module, "_compare", lambda name, got, ref: real(name, torch.as_tensor(got) + (
        1e-3 if name == "model.onnx" else 0.0), ref))  # an exporter that is off by 1e-3
    with pytest.raises(ExportError, match="model.onnx disagrees with the PyTorch model"):
        export_folder(model, candidate, {}, tmp_path / "best", data.test_images[:50])
    assert list(tmp_path.iterdir()) == []


def test_destinations_that_cannot_hold_a_folder_are_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingError, match="is a file, not a folder"):
        check_destination(tmp_path / "file" / "best", force=False)
    with pytest.raises(SettingError, match="is a file; the export is a folder"):
        check_destination(tmp_path / "file", force=True)
    check_destination(tmp_path / "new" / "deeper", force=False)  # to be made


def test_a_failed_write_leaves_the_existing_file_untouched(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"precious")

    def broken(path):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_an_untrained_model_round_trips_its_weights(tmp_path):
    model = build_model(load_preset("ref-19712").arch)
    images = torch.randint(0, 255, (20, 28, 28), dtype=torch.uint8)
    export_folder(model, load_preset("ref-19712"), {}, tmp_path / "m", images)
    loaded, _ = load_model(tmp_path / "m" / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


KILLED_EXPORT = """
import os, signal, sys, torch
from nas.results import export
from nas.arch.builder import build_model
from nas.arch.presets import load_preset

where, out = sys.argv[1], sys.argv[2]
real_replace, real_onnx = os.replace, export._write_onnx

def onnx_then_die(*args):  # killed while the staging folder is being filled
    real_onnx(*args)
    os.kill(os.getpid(), signal.SIGKILL)

def replace_then_die(src, dst):  # killed between moving the old export aside and moving the new one in
    real_replace(src, dst)
    if ".old-" in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)

if where == "staging":
    export._write_onnx = onnx_then_die
else:
    export.os.replace = replace_then_die
candidate = load_preset("ref-10066")
export.export_folder(build_model(candidate.arch), candidate, {}, out, torch.zeros(4, 28, 28, dtype=torch.uint8),
                     force=True)
"""


@pytest.mark.parametrize("where", ["staging", "moved aside"])
def test_an_export_killed_midway_is_undone_by_the_next_one(trained, tmp_path, where):
    candidate, model, data, _ = trained
    out = tmp_path / "best"
    export_folder(model, candidate, {}, out, data.test_images[:50])
    before = (out / "model.pt").read_bytes()
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, where, str(out)], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-500:]
    left = sorted(p.name for p in tmp_path.iterdir())
    # the half-written staging folder, and either the previous export or (moved aside) its hidden copy
    assert len(left) == 2 and ("best" in left) == (where == "staging"), left
    # the next export (or only its check) puts the previous one back and removes the half-written one
    with pytest.raises(SettingError, match="already exists and is not empty"):
        check_destination(out, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and (out / "model.pt").read_bytes() == before
    running = tmp_path / f".best.{os.getpid()}.abcd1234"  # a live export's staging folder is left alone
    running.mkdir()
    export_module._claim(running, "staging", running.name)
    check_destination(out, force=True)
    assert running.is_dir()


def test_folders_named_like_an_exports_own_are_the_users(tmp_path):
    # Only a record the export wrote makes a folder its own: names alone (a dead process id in them)
    # once had a refused export delete these with the files in them.
    out = tmp_path / "best"
    users = [tmp_path / name for name in (".best.old-2024", ".best.12345.backup", ".best.99999.abc", ".best.old-99999")]
    for folder in users:
        folder.mkdir()
        (folder / "mine.txt").write_text("precious")
    (users[3] / export_module.MOVE_RECORD).write_text(json.dumps(  # a record naming another folder: not this one's
        {"written_by": "nas-export", "role": "aside", "pid": 99999, "folder": ".best.old-1"}))
    check_destination(out, force=True)
    assert all((f / "mine.txt").read_text() == "precious" for f in users) and not out.exists()


def test_a_damaged_or_planted_weights_file_is_one_line_and_never_loaded(tmp_path, trained):
    import pickle

    from nas.engine.weights import read_weights

    candidate, model, data, _ = trained
    export_folder(model, candidate, {}, tmp_path / "best", data.test_images[:50])
    good = (tmp_path / "best" / "model.pt").read_bytes()
    planted = tmp_path / "planted.pt"

    class Payload:  # what an attacker's pickle would run on load
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    planted.write_bytes(pickle.dumps(Payload()))
    files = {"empty.pt": b"", "half.pt": good[: len(good) // 2], "text.pt": b"not weights at all"}
    for name, data_bytes in files.items():
        (tmp_path / name).write_bytes(data_bytes)
    for name in [*files, "planted.pt"]:
        with pytest.raises(SettingError) as caught:
            load_model(tmp_path / name)
        message = str(caught.value)
        assert len(message.splitlines()) == 1 and "weights_only" not in message and name in message, message
    assert not (tmp_path / "pwned").exists()
    assert set(read_weights(tmp_path / "best" / "model.pt", "path", "the model file")) >= {"spec", "state_dict"}


def test_a_file_size_limit_too_small_for_an_export_is_refused_before_any_work(tmp_path, tiny_mnist_dir):
    # torch's and onnx's writers abort the process from C++ past `ulimit -f` (exit 134, a C++ stack)
    import resource

    from conftest import command

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))

    done = subprocess.run([command("nas-export"), "--preset", "ref-10066", "--out", str(tmp_path / "best"),
                           "--data-dir", str(tiny_mnist_dir), "--device", "cpu"], capture_output=True, text=True,
                          preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "nas-export: error: --out: the file size limit (ulimit -f) is 50,000 bytes, and an export takes files of up "
        "to about 2,328,576; raise it (ulimit -f unlimited) and run the command again"], done.stderr
    assert not (tmp_path / "best").exists() and "training" not in done.stdout
