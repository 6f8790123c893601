"""docs/api.md's example runs as written, from a folder with MNIST beside it, and ``nas`` exports what it promises."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import nas

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_public_name_loads_and_import_nas_stays_light():
    for name in nas.__all__:
        assert getattr(nas, name) is not None, name
    light = subprocess.run([sys.executable, "-c", "import sys, nas; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"  # the commands import torch only when they need it


def test_the_api_docs_example_runs_as_written(real_mnist_dir, tmp_path):
    code = re.search(r"```python\n(.*?)```", API_DOC.read_text(), re.S).group(1)
    (tmp_path / "repo").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "mnist").symlink_to(real_mnist_dir)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path / "repo",
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    import nas

    shipped = nas.count_params(nas.load_preset("found-8k").arch)  # the preset the example builds, as shipped
    assert f"{shipped} parameters" in proc.stdout and "final epoch: validation" in proc.stdout
    assert f"# {shipped}, counted" in API_DOC.read_text()  # and the docs' comment says the same number
    assert (tmp_path / "repo" / "studies" / "api.db").exists()
