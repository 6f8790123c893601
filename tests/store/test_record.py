"""The trial record: one typed definition written to and read from a trial's user attributes."""

import optuna
import pytest

from nas.arch.presets import load_preset
from nas.store.record import candidate_of, key_of, TrialRecord, update_record, write_candidate, write_retrain


def test_a_record_round_trips_through_a_trial_and_keeps_attributes_short(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/r.db", direction="maximize")
    trial = study.ask()
    record = TrialRecord(rung=1, fidelity="2 ep x 10,000 img", name="ref-19712", params=19712, flops=4591514)
    record.write(trial, outcome="complete", val_acc=0.99, seed=3)
    write_candidate(trial, load_preset("ref-19712"))
    frozen = study.tell(trial, 0.99)
    again = TrialRecord.of(frozen)
    assert again == record and again.trained and again.has_result
    assert "bracket" not in frozen.user_attrs and "retries" not in frozen.user_attrs  # defaults are not written
    assert candidate_of(frozen).arch == load_preset("ref-19712").arch and key_of(frozen).startswith("c3x16nb")
    assert all(len(str(v)) < 100 for v in frozen.user_attrs.values())


def test_outcomes_are_checked():
    with pytest.raises(ValueError, match="outcome must be one of"):
        TrialRecord(outcome="done")
    assert not TrialRecord(outcome="rejected", params=30_000).trained
    assert not TrialRecord(outcome="duplicate", val_acc=0.9).trained and TrialRecord(outcome="duplicate", val_acc=0.9).has_result


def test_a_finished_trial_gets_attributes_optuna_itself_refuses(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    study = optuna.create_study(storage=url, study_name="s")
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):  # what Optuna does for finished trials
        study._storage.set_trial_user_attr(trial._trial_id, "x", 1)
    done = study.trials[0]
    update_record(study, done, promoted_to=4)
    write_retrain(study, done, [0, 1, 2], [0.995, 0.996, 0.997], 15)
    write_retrain(study, done, [0, 1], [0.99, 0.98], 15)  # a second retraining replaces
    with pytest.raises(ValueError, match="not fields of a trial record"):  # one name per stored key
        update_record(study, done, promoted=4)
    fresh = optuna.load_study(study_name="s", storage=url).trials[0]
    r = TrialRecord.of(fresh)
    assert r.promoted_to == 4 and r.retrain_seeds == [0, 1] and r.retrain_test_acc == [0.99, 0.98]
    assert r.retrain_mean == pytest.approx(0.985) and r.retrain_std == pytest.approx(0.00707, abs=1e-4)
    assert r.retrain_epochs == 15


def test_a_trial_without_a_candidate_says_so():
    study = optuna.create_study()
    frozen = study.tell(study.ask(), 0.0)
    with pytest.raises(ValueError, match="holds no candidate"):
        candidate_of(frozen)
