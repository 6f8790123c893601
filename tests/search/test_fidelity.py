"""The fidelity plan: rungs from settings, costs from measured speeds, promotion order."""

import math

import optuna
import pytest

from nas.errors import SettingError
from nas.search.settings import StudySettings
from nas.search.plan import fit_rungs, later_seconds, plan_lines, Rates, reserve_seconds, rung_seconds, screening_fits
from nas.search.rungs import check_rungs, parse_fidelity, parse_rungs, ranked
from nas.store.keys import KEY_ATTR
from nas.store.record import TrialRecord


def test_rungs_parse_and_must_grow_in_cost():
    assert parse_fidelity("2x10000") == (2, 10_000) and parse_fidelity("5") == (5, None)
    assert parse_rungs("2x10000, 5x25_000") == ("2x10000", "5x25000") and parse_rungs("none") == ()
    check_rungs(("1x10000", "2x50000"), 15, 50_000)
    with pytest.raises(SettingError, match="costs no less than the next"):
        check_rungs(("2x50000", "1x50000"), 15, 50_000)
    with pytest.raises(SettingError, match="costs no less than the next"):
        check_rungs(("15",), 15, 50_000)  # as dear as the full fidelity
    for bad in ("x", "2x", "0x100", "2xabc"):
        with pytest.raises(SettingError):
            parse_fidelity(bad)


def test_make_rungs_sizes_names_and_images():
    settings = StudySettings(epochs=15, rungs=("2x10000", "5x25000"), promote=4, finalists=3, subset=20_000)
    r0, r1, r2 = settings.make_rungs("s")
    assert (r0.keep, r1.keep, r2.keep) == (None, 12, 3)
    assert (r0.study_name, r1.study_name, r2.study_name) == ("s.rung0", "s.rung1", "s")
    assert (r0.images, r1.images, r2.images) == (10_000, 20_000, 20_000)  # the subset caps every rung
    assert r2.final and not r1.final and r2.evaluations == 15 and r1.evaluations == 1
    assert r0.label == "2 ep x 10,000 img"
    single = StudySettings(rungs=()).make_rungs("s")
    assert len(single) == 1 and single[0].final and single[0].study_name == "s" and single[0].keep is None


def test_costs_come_from_measured_rates():
    r0, r1, r2 = StudySettings(epochs=10, rungs=("1x1000", "2x5000"), promote=2, finalists=2,
                                               holdout=10_000).make_rungs("s")
    fast, slow = Rates(train_us=100.0, eval_us=10.0), Rates(train_us=300.0, eval_us=30.0)
    assert fast.seconds(r0, 10_000) == pytest.approx((100 * 1000 * 1 + 10 * 10_000 * 1) / 1e6)
    assert fast.seconds(r2, 10_000) == pytest.approx((100 * 50_000 * 10 + 10 * 10_000 * 10) / 1e6)
    # two workers: whichever is free takes the next (longest first)
    assert rung_seconds(r2, [slow, fast, fast], 10_000, 2) == pytest.approx(slow.seconds(r2, 10_000))
    assert rung_seconds(r2, [fast, fast], 10_000, 1) == pytest.approx(2 * fast.seconds(r2, 10_000))
    # the reserve counts the best-ranked candidates of rung 0 for each later rung's size
    reserve = reserve_seconds([r0, r1, r2], [[slow, fast, fast, fast]], 10_000, 1)
    assert reserve == pytest.approx(slow.seconds(r1, 10_000) + 3 * fast.seconds(r1, 10_000)
                                    + slow.seconds(r2, 10_000) + fast.seconds(r2, 10_000))
    # finalists at another precision (fp32 after bf16 screening): their own rates serve the final rung only
    slower = [slow.scaled(1.5), fast.scaled(1.5)]
    assert slower[0] == Rates(450.0, 45.0)
    reserve_fp32 = reserve_seconds([r0, r1, r2], [[slow, fast, fast, fast]], 10_000, 1, final=[slower])
    assert reserve_fp32 == pytest.approx(slow.seconds(r1, 10_000) + 3 * fast.seconds(r1, 10_000)
                                         + 1.5 * (slow.seconds(r2, 10_000) + fast.seconds(r2, 10_000)))


def test_a_front_reserve_fills_unscreened_budgets_with_their_own_estimates():
    r0, r1, r2 = StudySettings(epochs=10, rungs=("1x1000", "2x5000"), promote=2, finalists=1, holdout=10_000,
                               budgets=(2000, 20_000), objectives=("accuracy", "params")).make_rungs("s")
    big, small = Rates(train_us=300.0, eval_us=30.0), Rates(train_us=50.0, eval_us=5.0)
    screened = [[], [big]]  # only a 20,000-parameter reference screened so far
    planned = reserve_seconds([r0, r1, r2], screened, 10_000, 1, band_estimates=[small, big])
    assert planned == pytest.approx(2 * small.seconds(r1, 10_000) + 2 * big.seconds(r1, 10_000)
                                    + small.seconds(r2, 10_000) + big.seconds(r2, 10_000))
    # without the plan's estimates, the big one stands for every band: a reserve far above the plan
    assert reserve_seconds([r0, r1, r2], screened, 10_000, 1) > 1.5 * planned
    # screening goes on while the reserve fits; a budget with nothing screened may spend its own share
    rungs, big_only = [r0, r1, r2], 2 * big.seconds(r1, 10_000) + big.seconds(r2, 10_000)
    assert screening_fits(rungs, screened, 10_000, 1, planned + 1, band_estimates=[small, big])
    assert screening_fits(rungs, screened, 10_000, 1, big_only + 1, band_estimates=[small, big])
    assert not screening_fits(rungs, screened, 10_000, 1, big_only - 1, band_estimates=[small, big])
    both = [[small], [big]]  # every budget has a candidate: the reserve for them and one more each must fit
    assert not screening_fits(rungs, both, 10_000, 1, big_only + 1, band_estimates=[small, big])


def test_screening_goes_on_while_the_time_holds_what_would_go_up_with_one_more():
    # a rung promotes no more than was screened: one screened candidate needs the later rungs for two, not
    # for the four rung 1 keeps (that reserve closed a 4-minute run's screening after one candidate)
    r0, r1, r2 = StudySettings(epochs=10, rungs=("1x1000", "2x5000"), promote=4, finalists=1,
                               holdout=10_000).make_rungs("s")
    rate = Rates(train_us=100.0, eval_us=10.0)
    assert r1.keep == 4 and r2.keep == 1
    full = reserve_seconds([r0, r1, r2], [[rate]], 10_000, 1)
    assert full == pytest.approx(4 * rate.seconds(r1, 10_000) + rate.seconds(r2, 10_000))
    two = 2 * rate.seconds(r1, 10_000) + rate.seconds(r2, 10_000)
    assert reserve_seconds([r0, r1, r2], [[rate]], 10_000, 1, more=1) == pytest.approx(two)
    assert screening_fits([r0, r1, r2], [[rate]], 10_000, 1, two + 1) and two + 1 < full
    assert not screening_fits([r0, r1, r2], [[rate]], 10_000, 1, two - 1)
    assert not screening_fits([r0, r1, r2], [[rate] * 4], 10_000, 1, full - 1)  # four screened: rung 1 is full


def test_a_short_timeout_keeps_fewer_finalists_rather_than_screening_nothing():
    rungs = StudySettings(epochs=15, rungs=("2x10000", "5x25000"), promote=4, finalists=3).make_rungs("s")
    rate = Rates(train_us=300.0, eval_us=100.0)  # ~4 min per full-fidelity candidate
    full = rate.seconds(rungs[2], 10_000)
    assert fit_rungs(rungs, rate, 10_000, 1, 7200) == rungs  # two hours: the whole plan fits
    short = fit_rungs(rungs, rate, 10_000, 1, 3 * full)
    assert short[2].keep == 1 and short[1].keep == 4  # the ratio between rungs stays
    assert fit_rungs(rungs, rate, 10_000, 1, None) == rungs
    lines = plan_lines(short, rate, 10_000, 1, None, 3 * full)
    assert "the best 1 candidate," in lines[2] and "the best 4 candidates," in lines[1] and "estimated total" in lines[-1]
    one = fit_rungs(rungs, rate, 10_000, 1, 2 * full)  # one finalist, with less than half left to screen
    assert one[2].keep == 1
    with pytest.raises(SettingError, match="timeout: .* cannot hold even one full-fidelity candidate"):
        fit_rungs(rungs, rate, 10_000, 1, full / 2)  # not even one full-fidelity candidate fits
    # one fidelity: nothing to cut, but the time must hold one candidate (it planned "up to 0", then trained one)
    assert fit_rungs(rungs[-1:], rate, 10_000, 1, 2 * full) == rungs[-1:]
    with pytest.raises(SettingError, match="cannot hold even one full-fidelity candidate"):
        fit_rungs(rungs[-1:], rate, 10_000, 1, full / 2)


def test_the_full_fidelity_rung_is_priced_at_its_own_precision():
    # screening rates are bf16's; the finalists train in fp32, 1.5x slower per image here
    rungs = StudySettings(epochs=15, rungs=("2x10000", "2"), promote=4, finalists=2).make_rungs("s")
    rate = Rates(train_us=300.0, eval_us=100.0)
    same, slower = (plan_lines(rungs, rate, 10_000, 1, None, 7200, final_factor=f) for f in (1.0, 1.5))
    each = [float(line.split("~")[1].split(" s each")[0].replace(",", "")) for line in (same[2], slower[2])]
    assert each[1] == pytest.approx(1.5 * each[0], rel=0.01)  # the full-fidelity rung
    per = lambda line: line.split("~")[1]  # noqa: E731 - the price of one candidate
    assert per(same[0]) == per(slower[0]) and per(same[1]) == per(slower[1])  # screening and promotion: as measured
    time = 2 * later_seconds(rungs, rate, 10_000, 1)  # half of it for the rungs after screening
    assert fit_rungs(rungs, rate, 10_000, 1, time)[2].keep == 2  # two finalists fit at screening's price
    assert fit_rungs(rungs, rate, 10_000, 1, time, final_factor=1.5)[2].keep == 1  # not at their own


def test_a_probed_precision_ratio_is_held_to_what_the_formats_can_differ_by():
    from nas.search.plan import PRECISION_RATIO, precision_ratio

    assert precision_ratio(450.0, 300.0) == 1.5  # fp32 after native bf16, as measured
    assert precision_ratio(60.0, 300.0) == PRECISION_RATIO[0]  # a busy machine's 0.2x: never cheaper than screening
    assert precision_ratio(3000.0, 300.0) == PRECISION_RATIO[1]  # nor 10x
    assert precision_ratio(1.0, 0.0) == PRECISION_RATIO[0]


def test_a_new_studys_plan_times_typical_candidates_in_the_screening_precision(tmp_path, monkeypatch):
    from conftest import write_mnist

    from nas.engine.data import load_dataset
    from nas.engine.splits import make_splits
    from nas.engine.device import Placement
    from nas.search import opening
    from nas.space.space import SearchSpace, space_file

    space = SearchSpace.from_file(space_file("mnist_20k"))
    data = make_splits(load_dataset(write_mnist(tmp_path / "d", n_train=600, n_test=100)), holdout=100)
    probed = []
    monkeypatch.setattr("nas.engine.trainer.time_steps", lambda c, d, dev, steps, precision: probed.append(
        (c.arch.key, precision)) or (300.0 if precision == "fp32" else 200.0, 50.0))
    rates = opening.estimate_rates([], space, data, "cpu", 20_000, "bf16")
    typical = [c.arch.key for c in opening.typical_candidates(space, data.info.shape, 20_000)]
    assert rates == Rates(200.0, 50.0) and probed == [(k, "bf16") for k in typical]  # random ones, not the references
    assert not set(typical) & {space.reference(n).arch.key for n in space.references}
    assert opening.final_factor(space, data, Placement("cpu", "fp32", "bf16"), 20_000) == pytest.approx(1.5)
    assert opening.final_factor(space, data, Placement("cpu", "fp32", "fp32"), 20_000) == 1.0


@pytest.mark.parametrize("epochs, expected", [(15, ["2 ep x 180 img", "15 ep x 180 img"]), (1, ["1 ep x 180 img"])])
def test_a_small_data_set_gets_rungs_that_each_cost_more_than_the_last(epochs, expected):
    # 200 images, 20 held out: the default rungs 2x10000 and 2 both became "2 ep x 180 img", and with
    # one epoch the screening rung cost twice the full fidelity
    from nas.search.settings import SearchConfig

    new = SearchConfig(settings={"epochs": epochs, "holdout": 20}).new_settings()
    settings = new.fitted(180, asked_rungs=False)
    assert [r.label for r in settings.make_rungs("s", available=180)] == expected
    with pytest.raises(SettingError, match="rungs: rung 2x10000 costs no less than the next .* 180 training images"):
        new.fitted(180, asked_rungs=True)
    assert StudySettings().fitted(50_000, asked_rungs=False) == StudySettings()  # MNIST: as asked


def test_ranked_orders_by_validation_accuracy_once_per_candidate():
    study = optuna.create_study(direction="maximize")
    for i, (val, outcome, key) in enumerate([(0.90, "complete", "a"), (0.95, "complete", "b"), (0.95, "complete", "c"),
                                              (0.99, "diverged", "d"), (0.97, "duplicate", "b"), (None, "rejected", "e"),
                                              (0.96, "complete", "b")]):
        trial = study.ask()
        for k, v in TrialRecord(outcome=outcome, val_acc=val, params=1).attrs().items():
            trial.set_user_attr(k, v)
        study._storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, key)
        study.tell(trial, val if val is not None else 0.0)
    order = [t.number for t in ranked(study.trials)]
    assert order == [6, 2, 0]  # best first; ties by number; b once (its best); no duplicate, diverged, rejected
    assert not math.isnan(study.trials[0].value)


def test_a_refused_time_fits_the_full_fidelity_fewer_epochs_first_then_fewer_images():
    from nas.cli.timing import fitting_fidelity
    from nas.search.plan import TimeTooShort

    # the default full fidelity, 15 epochs on 50,000 images
    assert fitting_fidelity(TimeTooShort(300, 1000, 15, 50_000)) == (2, 50_000)  # 15 x 0.15 x 0.9 = 2.0 epochs
    assert fitting_fidelity(TimeTooShort(300, 10_000, 15, 50_000)) == (1, 10_000)  # a fifth of one epoch
    assert fitting_fidelity(TimeTooShort(300, 200_000, 15, 50_000)) is None  # under 5,000 images: only time helps
    assert fitting_fidelity(TimeTooShort(30, 60, 4, 8000)) == (1, 7200)  # 4 x 8,000 x 0.25 x 0.9, in hundreds
    assert fitting_fidelity(TimeTooShort(30, 40, 4, 1200)) == (1, 1200)  # a small set: epochs first
    assert fitting_fidelity(TimeTooShort(30, 60, 4, 1200)) == (1, 1000)  # then images, down to half of it


def test_a_time_too_short_for_the_full_fidelity_searches_at_one_that_fits_in_a_study_of_its_own(tmp_path):
    import subprocess

    from conftest import command, write_mnist

    data = write_mnist(tmp_path / "data", n_train=6000, n_test=300)
    storage = f"sqlite:///{tmp_path}/s.db"
    argv = [command("nas-search"), "--timeout", "20", "--holdout", "500", "--threads", "1", "--storage", storage,
            "--data-dir", str(data)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "cannot hold one candidate" in line)
    name = line.split("in study ")[1].strip("'")
    assert name.startswith("mnist_20k-") and "ep-" in name, line
    study = optuna.load_study(study_name=name, storage=storage)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name == "mnist_20k"] == []
    # the same command again resumes that study, whatever its own measurement would fit
    again = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    line = next(line for line in again.stdout.splitlines() if "cannot hold one candidate" in line)
    assert line.endswith(f"in study {name!r} (resumed)"), line
    from nas.store.study import runs_of

    assert len(runs_of(optuna.load_study(study_name=name, storage=storage))) == 2
