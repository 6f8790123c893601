"""The README's five-minute tour, run as written (each command from the README itself) at tiny size:
flags appended to each command make it small (the last of a repeated flag wins), nothing else changes.
Then what a user leaves with: a study that resumes with its own settings, a report, model files that
run without this package, retraining results written back to the trial."""

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from conftest import command

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"nas-search": ["--trials", "3", "--epochs", "1", "--subset", "400", "--holdout", "500", "--rungs", "1x100",
                       "--finalists", "1", "--promote", "2", "--seed", "0"],
        "nas-export": ["--epochs", "1", "--subset", "500"],
        "nas-train": ["--epochs", "1", "--subset", "500", "--json"]}
ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"}


ACTIVATE = Path(command("nas-search")).parent / "activate"  # the venv's, as the set-up line sources it


def tour() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- tour.*?-->\s*```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def pasted(argv) -> list[str]:
    """The command as a user pastes it into a shell where the README's set-up line activated the venv:
    a command the venv does not put on the PATH fails here as it would there."""
    return ["bash", "-c", f". {shlex.quote(str(ACTIVATE))} && exec {shlex.join(argv)}"]


def test_the_set_up_line_activates_the_venv_the_tour_relies_on():
    set_up = re.search(r"## Set up and search\s*```bash\n(.*?)\n```", README.read_text(), re.S).group(1)
    assert ". .venv/bin/activate && pip install -e ." in set_up and "&& nas-search " in set_up


def run(argv, cwd, ok=True):
    proc = subprocess.run(pasted(argv), capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)
    if ok:
        assert proc.returncode == 0, (argv, proc.stderr)
    return proc


def dashboard_answers(argv, cwd) -> bool:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(pasted([*argv, "--port", str(port)]), cwd=cwd, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        return False
    finally:
        server.kill()
        server.wait()


def test_the_readme_tour_runs_as_written(real_mnist_dir, tmp_path):
    steps = tour()
    assert [s[0] for s in steps] == ["nas-search", "optuna-dashboard", "nas-report", "nas-export", "nas-train"]
    outputs = {}
    for argv in steps:
        argv = [str(real_mnist_dir) if a == "../shared/data/mnist" else a for a in argv] + TINY.get(argv[0], [])
        if argv[0] == "optuna-dashboard":
            assert dashboard_answers(argv, tmp_path)
            continue
        outputs[argv[0]] = run(argv, tmp_path).stdout
    search = outputs["nas-search"]
    assert "plan:" in search and "best trial:" in search and "report: first.html" in search
    assert "model files: first-model/" in search and "nas-export --storage sqlite:///studies/mnist.db" in search
    assert (tmp_path / "first.html").stat().st_size > 1_000_000 and (tmp_path / "first.csv").exists()
    assert "one row per trial" in outputs["nas-report"]
    assert re.search(r"model\.onnx +1,000 test images: .* same class on 1,000/1,000: ok", outputs["nas-export"])
    retrained = json.loads(outputs["nas-train"])
    storage = "sqlite:///" + str(tmp_path / "studies" / "mnist.db")
    trial = optuna.load_study(study_name="first", storage=storage).trials[retrained["trial"]]
    assert trial.user_attrs["retrain_test_acc"] == retrained["test_acc"] and trial.user_attrs["retrain_seeds"] == [0, 1, 2]
    # The study resumes with its own settings and refuses a different one, in one line.
    again = run(["nas-search", "--study", "first", "--trials", "1", "--data-dir", str(real_mnist_dir)], tmp_path).stdout
    assert "resumed" in again and "1 ep x 100 img" in again
    refused = run(["nas-search", "--study", "first", "--budget", "8000", "--data-dir", str(real_mnist_dir)], tmp_path,
                  ok=False)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
    assert "--budget: study 'first' was created with budget 20000, this run asks for 8000" in refused.stderr
    for folder in ("first-model", "first-retrained"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [".nas-export", "metrics.json", "model.onnx",
                                                                         "model.pt", "model.pt2", "spec.json"]
    assert json.loads((tmp_path / "first-retrained" / "metrics.json").read_text())["retrained"] is True
    assert json.loads((tmp_path / "first-model" / "metrics.json").read_text())["retrained"] is False
    # The folder runs with plain PyTorch and onnxruntime, in a process where this package cannot be imported.
    plain = r"""
import gzip, sys
sys.modules["nas"] = None
import numpy as np, onnxruntime, torch
raw = gzip.open(sys.argv[2] + "/t10k-images-idx3-ubyte.gz").read()
images = np.frombuffer(raw, np.uint8, offset=16)[: 100 * 784].reshape(100, 1, 28, 28)
labels = np.frombuffer(gzip.open(sys.argv[2] + "/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:100]
x = ((images.astype(np.float32) / 255 - 0.1307) / 0.3081)
a = torch.export.load(sys.argv[1] + "/model.pt2").module()(torch.from_numpy(x)).argmax(1).numpy()
b = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx").run(None, {"image": x})[0].argmax(1)
print(int((a == b).sum()), int((a == labels).sum()))
"""
    same, _ = map(int, subprocess.run([sys.executable, "-c", plain, str(tmp_path / "first-retrained"),
                                             str(real_mnist_dir)], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert same == 100  # both formats give the same answers on 100 real test images
