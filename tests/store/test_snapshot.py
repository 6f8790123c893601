"""A study that outlives its machine: the SQLite file's snapshot (NAME.db.gz), kept as a search goes,
is all a fresh clone needs to open the study in optuna-dashboard, resume it with the same command, and
retrain any trial; a trials CSV alone retrains any row."""

import gzip
import shutil
import subprocess

import pytest

from conftest import command
from nas.results.query import open_study
from nas.store.record import TrialRecord
from nas.search.run import run_search
from nas.store.study import runs_of
from nas.search.settings import SearchConfig
from nas.store.urls import StorageError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("snapshot")]  # one module fixture: build it once


def config_for(folder, data, **kw):
    return SearchConfig(**{**dict(storage=f"sqlite:///{folder}/s.db", study="s", trials=3, device="cpu",
                                  data_dir=str(data), verify_data=False, seed=1, snapshot=True,
                                  settings=dict(epochs=1, rungs=(), holdout=200, subset=300, budget=15_000,
                                                references=False)), **kw})


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """A search run with --snapshot."""
    from conftest import write_mnist

    folder = tmp_path_factory.mktemp("machine")
    data = write_mnist(folder / "mnist")
    run_search(config_for(folder, data))
    return folder, data, open_study(f"sqlite:///{folder}/s.db", "s").get_trials()


@pytest.fixture
def shipped(machine, tmp_path):
    """Only the search's .db.gz, copied to a fresh folder (a clone)."""
    folder, data, trials = machine
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(folder / "s.db.gz", clone / "s.db.gz")
    return clone, data, trials


def test_a_snapshot_restores_the_whole_study_and_the_same_command_resumes_it(shipped):
    clone, data, trials = shipped
    assert gzip.open(clone / "s.db.gz").read(16) == b"SQLite format 3\x00"
    again = open_study(f"sqlite:///{clone}/s.db", "s").get_trials()  # restored from the .gz on first open
    assert [(t.number, t.params, TrialRecord.of(t).val_acc) for t in again] == \
           [(t.number, t.params, TrialRecord.of(t).val_acc) for t in trials]
    before = (clone / "s.db.gz").read_bytes()
    summary = run_search(config_for(clone, data, snapshot=False, trials=2))  # the .gz beside it is kept current
    assert not summary.new_study and len(open_study(f"sqlite:///{clone}/s.db", "s").get_trials()) == len(trials) + 2
    assert (clone / "s.db.gz").read_bytes() != before
    (clone / "s.db").unlink()
    restored = open_study(f"sqlite:///{clone}/s.db", "s")
    assert len(restored.get_trials()) == len(trials) + 2
    assert [r["run"] for r in runs_of(restored)][-1] == summary.run_id  # written at the run's end, with its record


def test_a_damaged_snapshot_is_one_line_and_left_as_it_is(tmp_path):
    (tmp_path / "s.db.gz").write_bytes(b"not gzip")
    with pytest.raises(StorageError, match=r"cannot restore .*s\.db from .*s\.db\.gz"):
        open_study(f"sqlite:///{tmp_path}/s.db", "s")
    assert (tmp_path / "s.db.gz").read_bytes() == b"not gzip" and not (tmp_path / "s.db").exists()


def test_a_restored_study_opens_in_optuna_dashboard(shipped):
    from test_dashboard import dashboard_study

    clone, _, trials = shipped
    open_study(f"sqlite:///{clone}/s.db", "s")  # any command restores the file; the dashboard then opens it
    detail = dashboard_study(f"sqlite:///{clone}/s.db", "s")
    assert len(detail["trials"]) == len(trials)


def test_any_row_of_the_trials_csv_retrains_from_the_file_alone(shipped, tmp_path):
    clone, data, trials = shipped
    csv = tmp_path / "trials.csv"
    report = [command("nas-report"), "--storage", f"sqlite:///{clone}/s.db", "--out", str(tmp_path / "r.html"),
              "--csv", str(csv), "--snapshot"]
    written = subprocess.run(report, check=True, capture_output=True, text=True).stdout
    assert f"{clone}/s.db.gz: the study to commit" in written
    assert gzip.open(clone / "s.db.gz").read(16) == b"SQLite format 3\x00"
    trained = next(t for t in trials if TrialRecord.of(t).trained)
    (clone / "s.db").unlink()
    (clone / "s.db.gz").unlink()  # nothing but the CSV
    out = subprocess.run([command("nas-train"), "--csv", str(csv), "--row", str(trained.number), "--epochs", "1",
                          "--subset", "300", "--device", "cpu", "--data-dir", str(data)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    params = f"{TrialRecord.of(trained).params:,} parameters"
    assert f"s trial {trained.number}: {params}" in out.stdout and "final (epoch 1): test acc" in out.stdout
    wrong = subprocess.run([command("nas-train"), "--csv", str(csv), "--row", "999", "--data-dir", str(data)],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.strip().count("\n") == 0
    assert "has no trained trial 999 of the main study" in wrong.stderr
