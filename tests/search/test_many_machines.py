"""Several machines on one study: separate nas-search processes sharing a real PostgreSQL database."""

import re
import subprocess
from collections import Counter

import optuna
import pytest

from conftest import PG_PASSWORD as PASSWORD, command

from nas.store.record import TrialRecord

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgresql")]  # one test process uses the server at a time


def test_three_machines_share_one_study_on_postgresql(pg_url, real_mnist_dir, tmp_path):
    artifacts = tmp_path / "artifacts"  # a folder all machines share, as the README says
    args = [command("nas-search"), "--storage", pg_url, "--study", "shared", "--trials", "2", "--epochs", "1",
            "--artifacts", str(artifacts),
            "--rungs", "1x100", "--finalists", "2", "--promote", "2", "--subset", "300", "--holdout", "500",
            "--data-dir", str(real_mnist_dir), "--device", "cpu", "--jobs", "1"]
    env = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"}
    machines = [subprocess.Popen([*args, "--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for i in range(3)]
    outputs = [m.communicate(timeout=900) for m in machines]
    for m, (out, err) in zip(machines, outputs):
        assert m.returncode == 0, err
        assert PASSWORD not in out + err and "***" in out  # the URL is shown, its password never
        assert "Traceback" not in err
    storage = pg_url
    screening = optuna.load_study(study_name="shared.rung0", storage=storage).get_trials()
    final = optuna.load_study(study_name="shared", storage=storage).get_trials()
    # No errors, nothing lost or left running: every trial ended with a result. A sampled candidate may
    # be over the budget (rejected, PRUNED) or reuse an earlier one's result (duplicate); neither trains.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in screening + final), [t.state for t in screening + final]
    outcomes = Counter(t.user_attrs["outcome"] for t in screening)
    assert set(outcomes) <= {"complete", "rejected", "duplicate"}, outcomes
    assert outcomes["complete"] == 6  # 3 machines x 2 screened (--trials counts trained candidates)
    numbers = [t.number for t in screening]
    assert len(numbers) == len(set(numbers))  # numbered once each
    names = Counter(t.user_attrs.get("name") for t in screening if t.user_attrs.get("name"))
    assert names == Counter({"ref-19970": 1, "ref-10066": 1, "ref-19712": 1, "ref-19750": 1, "ref-18520": 1,
                             "found-20k": 1})  # the known networks, each queued and trained once
    trained = [int(re.search(r"this run: trained (\d+)", out).group(1)) for out, _ in outputs]
    assert sum(trained) == outcomes["complete"] + len(final)  # what each machine says it trained adds up
    # Machines that start together share one round; one that arrives after its screening closed screens a
    # round of its own. Each round promotes its 2 finalists once.
    rounds = {TrialRecord.of(t).bracket for t in final}
    assert len(final) == 2 * len(rounds) and len({t.user_attrs["promoted_from"] for t in final}) == len(final)
    assert all(t.user_attrs["outcome"] == "complete" for t in final)
    assert len(list(artifacts.iterdir())) == sum(trained)  # every trained trial's weights, in the shared folder
