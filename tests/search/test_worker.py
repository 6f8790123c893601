"""The worker's state machine over the rungs, on a real study and tiny data."""

import pytest
from optuna.trial import TrialState

from nas.search.settings import SearchConfig
from nas.store.record import candidate_of, key_of, TrialRecord
from nas.search.opening import attach, create_or_finish, read_search
from nas.store.storage import make_storage, storage_lock
from nas.search.worker import current_bracket, Worker

pytestmark = pytest.mark.slow  # end to end: left out of the fast loop (pytest -m "not slow")


@pytest.fixture
def search(tiny_mnist_dir, tmp_path):
    config = SearchConfig(storage=f"sqlite:///{tmp_path}/s.db", study="w", device="cpu", data_dir=str(tiny_mnist_dir),
                          verify_data=False, settings=dict(epochs=2, rungs=("1x100",), finalists=2, promote=2,
                                                           holdout=200, subset=300))
    opened = read_search(config)
    create_or_finish(config, opened, make_storage(config.storage))
    return attach(config, opened, "run1", 0, 0)


def test_screening_comes_first_then_a_promotion_then_the_final_rung(search):
    worker = Worker(search)
    assert worker.next_step(None, 3) == ("train", search.rungs[0])  # the queued references
    for _ in range(3):
        worker.runner.run(search.rungs[0], worker.ask(search.rungs[0]), worker.bracket)
    assert worker.next_step(None, 3) == ("promote", search.rungs[1])  # this run's 3 screened: rank them
    worker.promote(search.rungs[1])
    worker.promote(search.rungs[1])  # a second promotion (another worker, a crash and a restart) adds nothing
    finals = search.studies[1].get_trials()
    assert len(finals) == 2 and all(t.state == TrialState.WAITING for t in finals)
    screened = {t.number: TrialRecord.of(t) for t in search.studies[0].get_trials() if t.state.is_finished()}
    assert {TrialRecord.of(t).promoted_from for t in finals} <= set(screened)
    assert worker.next_step(None, 3) == ("train", search.rungs[1])
    for _ in range(2):
        worker.runner.run(search.rungs[1], worker.ask(search.rungs[1]), worker.bracket)
    assert worker.ask(search.rungs[1]) is None  # nothing queued: a final rung never samples
    assert worker.next_step(None, 3) == ("stop", "done")
    assert current_bracket(search) == 1  # the round is over: a next run starts a new one


def test_an_over_budget_candidate_is_rejected_without_training(search, monkeypatch):
    from nas.search import trial as trial_module

    monkeypatch.setattr(trial_module, "train", lambda *a, **k: pytest.fail("trained a rejected candidate"))
    search.settings = type(search.settings)(**{**search.settings.__dict__, "budget": 15_000})
    frozen = Worker(search).runner.run(search.rungs[0], Worker(search).ask(search.rungs[0]), 0)  # ref-19970
    r = TrialRecord.of(frozen)
    assert r.outcome == "rejected" and frozen.state == TrialState.PRUNED and r.val_acc is None
    assert frozen.constraints["params"] > 0


def test_every_trained_trials_weights_are_kept_as_an_artifact(search):
    from nas.store.artifacts import artifact_dir, load_weights
    from nas.arch.builder import build_model

    worker = Worker(search)
    for _ in range(2):
        worker.runner.run(search.rungs[0], worker.ask(search.rungs[0]), worker.bracket)
    worker.promote(search.rungs[1])
    frozen = worker.runner.run(search.rungs[1], worker.ask(search.rungs[1]), worker.bracket)
    screened = [t for t in search.studies[0].get_trials() if t.state.is_finished()]
    assert len(screened) == 2
    for trial in [frozen, *screened]:  # the final rung's and the screened ones
        state = load_weights(trial, search.studies[0], artifact_dir(search.config.storage))
        build_model(candidate_of(trial).arch).load_state_dict(state)  # the trial's own network's weights
    search.settings = type(search.settings)(**{**search.settings.__dict__, "budget": 15_000})
    rejected = worker.runner.run(search.rungs[0], worker.ask(search.rungs[0]), worker.bracket)  # over budget: never trained
    assert TrialRecord.of(rejected).outcome == "rejected"
    with pytest.raises(ValueError, match="has no stored weights"):
        load_weights(rejected, search.studies[0], artifact_dir(search.config.storage))


def test_a_run_that_arrives_after_the_rounds_screening_screens_a_round_of_its_own(search):
    # Machine A screens 3 candidates, promotes 2 and is training both finalists when machine B starts.
    a = Worker(search)
    for _ in range(3):
        a.runner.run(search.rungs[0], a.ask(search.rungs[0]), a.bracket)
    a.promote(search.rungs[1])
    running = [a.ask(search.rungs[1]) for _ in range(2)]
    late = attach(search.config, read_search(search.config), "run2", 0, 0)
    b = Worker(late)
    b.bracket = current_bracket(late)
    assert b.bracket == 0 and b.next_step(None, 2) == ("wait", None)  # A's round is not over
    for trial in running:
        a.runner.run(search.rungs[1], trial, a.bracket)
    # Round 0 is over and B screened nothing in it: rather than stop, B screens round 1, taking the
    # references A left queued first.
    assert b.next_step(None, 2) == ("train", late.rungs[0]) and b.bracket == 1
    screened = [b.runner.run(late.rungs[0], b.ask(late.rungs[0]), b.bracket) for _ in range(2)]
    assert [TrialRecord.of(t).name for t in screened] == ["ref-19750", "ref-18520"]
    assert all(TrialRecord.of(t).bracket == 1 and TrialRecord.of(t).run == "run2" for t in screened)
    assert b.next_step(None, 2) == ("promote", late.rungs[1])
    b.promote(late.rungs[1])
    mine = [t for t in late.studies[1].get_trials() if TrialRecord.of(t).bracket == 1]
    assert {TrialRecord.of(t).promoted_from for t in mine} == {t.number for t in screened}  # its own round only
    assert a.next_step(None, 3) == ("stop", "done")  # A trained in round 0: it ends with it


def test_the_reserve_for_fp32_finalists_comes_from_their_own_probed_rates(search, monkeypatch):
    from dataclasses import replace

    from nas.engine.device import Placement
    from nas.search import worker as worker_module
    from nas.search.plan import Rates, reserve_seconds
    from nas.search.rungs import ranked

    worker = Worker(search)
    for _ in range(3):
        worker.runner.run(search.rungs[0], worker.ask(search.rungs[0]), worker.bracket)
    screened = search.studies[0].get_trials()
    top = [[(t, Rates.of(TrialRecord.of(t))) for t in ranked(screened)]]  # one band: a single budget
    one = replace(search, placement=Placement("cpu", "fp32", "fp32"))
    assert Worker(one).final_rates(top) is None  # one precision: screening rates serve
    # A CPU with native bf16: screening runs in bf16, the finalists in fp32.
    search.placement = Placement("cpu", "fp32", "bf16")
    assert search.precision_at(search.rungs[0]) == "bf16" and search.precision_at(search.final) == "fp32"
    probes = []

    def probe(candidate, data, device, steps, precision):  # fp32 1.5x slower, as measured (a busy machine reads anything)
        probes.append(precision)
        return (450.0 if precision == "fp32" else 300.0), 50.0

    monkeypatch.setattr(worker_module, "time_steps", probe)
    rates = worker.final_rates(top)
    assert len(rates[0]) == search.final.keep == 2 and probes == ["fp32", "bf16"] * 2
    for (trial, screening), final in zip(top[0], rates[0]):
        assert worker._final_ratio[key_of(trial)] == 1.5 and final == screening.scaled(1.5)
    worker.final_rates(top)
    assert len(probes) == 4  # each candidate is probed once
    val = len(search.data.val_labels)
    with_probe = reserve_seconds(search.rungs, [[r for _, r in top[0]]], val, 1, rates)
    without = reserve_seconds(search.rungs, [[r for _, r in top[0]]], val, 1)
    assert with_probe != without


def test_a_run_restarted_after_a_kill_between_ask_and_the_first_beat_runs_that_trial(search):
    """Issue 27, as the kill test met it: SIGKILL between ``study.ask()`` and ``beat()`` in Worker.ask
    left the first reference RUNNING without a beat. The restarted run screens its candidates; it must
    run the dead one's trial again among them, not find it stale only after its screening has closed
    and leave the copy queued for ever (lost)."""
    with storage_lock(search.config.storage):
        dead = search.studies[0].ask()  # the killed run's last act
    restarted = attach(search.config, read_search(search.config), "run2", 0, 0)
    assert Worker(restarted).run(None, 6) == "done"  # the five references and found-20k
    trials = search.studies[0].get_trials()
    assert [t.state for t in trials if not t.state.is_finished()] == []  # nothing left queued or running
    first = trials[dead.number]
    copies = [t for t in trials if TrialRecord.of(t).retry_of == dead.number]
    assert first.state == TrialState.FAIL and TrialRecord.of(first).outcome == "interrupted"
    assert len(copies) == 1 and TrialRecord.of(copies[0]).outcome == "complete"
    assert TrialRecord.of(copies[0]).name == TrialRecord.of(first).name == "ref-19970"
