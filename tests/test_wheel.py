"""The package installs whole: a wheel, installed into a fresh venv away from the repository, finds its
default search space and presets."""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_in_a_fresh_venv_runs_without_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("nas_mnist-*.whl"))
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    # The dependencies (torch is gigabytes) come from this venv's site-packages as a plain path:
    # its .pth files, the editable install of the repository among them, are not processed.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import nas; print(nas.__file__)"], capture_output=True, text=True,
                           cwd=elsewhere, check=True).stdout.strip()
    assert where.startswith(str(fresh)) and str(REPO) not in where
    # every module of the repository's package is in the wheel (a sub-package left out of pyproject's list is not)
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                     for p in (REPO / "nas").rglob("*.py"))
    imported = subprocess.run([str(python), "-c", f"import importlib; [importlib.import_module(m) for m in {modules!r}]"],
                              capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert imported.returncode == 0, imported.stderr
    run = subprocess.run([str(fresh / "bin" / "nas-show"), "--space", "mnist_20k", "--sample", "10",
                          "--json"], capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["space"] == "mnist_20k" and out["sampled"] == 10 and out["failed"] == 0
    presets = subprocess.run([str(fresh / "bin" / "nas-show"), "--list", "--json"], capture_output=True, text=True,
                             cwd=elsewhere, timeout=300)
    assert len(json.loads(presets.stdout)) >= 5


def test_the_space_files_have_one_source_at_the_top_of_the_repository():
    from nas.space.space import SPACES_DIR, shipped_spaces

    assert SPACES_DIR.resolve() == (REPO / "search_spaces").resolve()  # the editable install reads them there
    assert {"mnist_20k", "mnist_front"} <= set(shipped_spaces())
    assert not (REPO / "nas" / "space" / "spaces").exists()
