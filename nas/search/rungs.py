"""The fidelity plan: successive halving over rungs of increasing training cost.

A *fidelity* is "E epochs on N training images", trained from scratch with the recipe's whole
schedule compressed into the E epochs (``Recipe.compressed``). Rung 0 screens as many sampled
candidates as the run allows (``trials``, or the time left after reserving the later rungs); each
later rung trains the best ``1/promote`` of the rung below, ranked by validation accuracy at that
rung's fidelity; the last rung trains ``finalists`` candidates at full fidelity and picks the
winner. Each rung is its own Optuna study, so the sampler (in rung 0) only ever compares
accuracies of one fidelity.

How long each rung takes, and how a run's time is shared among them, is :mod:`nas.search.plan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from optuna.trial import FrozenTrial, TrialState

from nas.errors import SettingError
from nas.store.record import TrialRecord, key_of
from nas.arch import MAX_EPOCHS

_FIDELITY = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_fidelity(text: str) -> tuple[int, int | None]:
    """``"2x10000"`` -> (2 epochs, 10,000 images); ``"5"`` -> (5 epochs, every image)."""
    m = _FIDELITY.match(str(text).strip().replace(",", "").replace("_", ""))
    if not m:
        raise SettingError("rungs", f"a rung is EPOCHS or EPOCHSxIMAGES (e.g. 2x10000), got {text!r}")
    epochs, images = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    if not 1 <= epochs <= MAX_EPOCHS or (images is not None and images < 1):
        raise SettingError("rungs", f"rung {text!r} needs 1 to {MAX_EPOCHS} epochs and at least 1 image")
    return epochs, images


def parse_rungs(text: str) -> tuple[str, ...]:
    """The command line's form: ``"2x10000,5x25000"``, or ``"none"`` for one fidelity."""
    if text.strip().lower() in ("none", ""):
        return ()
    parsed = [parse_fidelity(part) for part in text.split(",")]
    return tuple(f"{e}x{n}" if n is not None else str(e) for e, n in parsed)


def check_rungs(rungs: Iterable[str], epochs: int, train_images: int) -> None:
    """Each rung must cost less than the next (epochs x images), the last screening rung less
    than the full fidelity."""
    costs = []
    for text in rungs:
        e, n = parse_fidelity(text)
        costs.append((text, e * min(n or train_images, train_images)))
    costs.append((f"{epochs} epochs on all {train_images:,} images", epochs * train_images))
    for (a, ca), (b, cb) in zip(costs, costs[1:]):
        if ca >= cb:
            raise SettingError("rungs", f"rung {a} costs no less than the next ({b}); each rung must train "
                               "fewer epochs x images than the one after it (or use rungs none)")


def fitting_rungs(rungs: Iterable[str], epochs: int, train_images: int) -> tuple[str, ...]:
    """The longest run of ``rungs`` that is cheaper, rung by rung, than the full fidelity: the default
    rungs for a study with few epochs or a small subset."""
    kept: list[str] = []
    for text in rungs:
        try:
            check_rungs((*kept, text), epochs, train_images)
        except SettingError:
            break
        kept.append(text)
    return tuple(kept)


def label(epochs: int, images: int) -> str:
    return f"{epochs} ep x {images:,} img"


@dataclass(frozen=True)
class Rung:
    index: int
    epochs: int
    images: int  # training images
    keep: int | None  # candidates trained per round (per budget); None: rung 0, open-ended
    study_name: str
    final: bool
    buckets: tuple[int, ...] = ()  # a front search's budgets: each promotes its own best (by parameters)

    @property
    def per_round(self) -> int:
        """Candidates trained per round, over every budget."""
        return (self.keep or 0) * max(1, len(self.buckets))

    @property
    def label(self) -> str:
        return label(self.epochs, self.images)

    @property
    def evaluations(self) -> int:
        """The final rung validates after every epoch (learning curves, pruning); screening at the end."""
        return self.epochs if self.final else 1


def make_rungs(name: str, screening: Iterable[str], epochs: int, train_images: int, finalists: int,
               promote: int, buckets: tuple[int, ...] = ()) -> list[Rung]:
    """The ``screening`` rungs, then full fidelity (``epochs`` on all ``train_images``); the last rung
    is the main study itself, named ``name``, the others ``name.rung0``, ``name.rung1``, ..."""
    fidelities = [parse_fidelity(r) for r in screening] + [(epochs, None)]
    count = len(fidelities)
    rungs = []
    for i, (rung_epochs, images) in enumerate(fidelities):
        final = i == count - 1
        keep = None if i == 0 else finalists * promote ** (count - 1 - i)
        study_name = name if final else f"{name}.rung{i}"
        rungs.append(Rung(i, rung_epochs, min(images or train_images, train_images), keep, study_name, final,
                          tuple(buckets) if len(buckets) > 1 else ()))
    return rungs


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trained trials of one rung, best validation accuracy first (ties: earlier first), one per
    candidate (a duplicate's original stands for it)."""
    seen: set[str] = set()
    out = []
    candidates = [(t, TrialRecord.of(t)) for t in trials]
    candidates = [(t, r) for t, r in candidates if r.is_point and r.outcome != "diverged" and t.state.is_finished()]
    for t, r in sorted(candidates, key=lambda tr: (-tr[1].val_acc, tr[0].number)):
        key = key_of(t) or str(t.number)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def bucket_of(params: int | None, buckets: tuple[int, ...]) -> int:
    """Which budget's band a candidate falls in: band i holds budgets[i-1] <= params < budgets[i]."""
    return next((i for i, b in enumerate(buckets) if params is not None and params < b), len(buckets) - 1)


def ranked_by_bucket(trials: Iterable[FrozenTrial], buckets: tuple[int, ...] = ()) -> list[list[FrozenTrial]]:
    """:func:`ranked` within each budget's band of parameters (one list without buckets): a front
    search promotes each budget's best, so every budget gets finalists of its own size."""
    order = ranked(trials)
    if len(buckets) <= 1:
        return [order]
    bands: list[list[FrozenTrial]] = [[] for _ in buckets]
    for t in order:
        bands[bucket_of(TrialRecord.of(t).params, buckets)].append(t)
    return bands


def band_has_its_share(trials: Iterable[FrozenTrial], params: int, buckets: tuple[int, ...]) -> str | None:
    """Why a front search screens no candidate of ``params`` now, or None: each budget's band gets an
    equal share of the screening time, so a band trains its next candidate only when no other band
    has spent less (``trials``: this round's screening trials; a running one counts at its band's
    mean). Equal time, not equal counts: at equal counts the smallest band got a fifth of the time
    and lost to a search of its budget alone by 4.0 points, at equal time by 0.3 (docs/results.md)."""
    if len(buckets) <= 1:
        return None
    spent: list[list[float]] = [[] for _ in buckets]
    running = []
    for t in trials:
        r = TrialRecord.of(t)
        if r.trained and r.seconds is not None:
            spent[bucket_of(r.params, buckets)].append(r.seconds)
        elif t.state == TrialState.RUNNING and r.params is not None:
            running.append(bucket_of(r.params, buckets))
    every = [s for band in spent for s in band]
    typical = [sum(b) / len(b) if b else (sum(every) / len(every) if every else 1.0) for b in spent]
    seconds = [sum(b) for b in spent]
    for b in running:  # a running candidate counts at its band's typical time
        seconds[b] += typical[b]
    band, least = bucket_of(params, buckets), seconds.index(min(seconds))
    if seconds[band] <= seconds[least]:
        return None
    return (f"band {band_label(band, buckets)} has screened {seconds[band]:.0f} s, band "
            f"{band_label(least, buckets)} {seconds[least]:.0f} s: each budget's band gets an equal share of "
            "the screening time")


def band_label(band: int, buckets: tuple[int, ...]) -> str:
    return f"{buckets[band - 1] if band else 0:,}-{buckets[band]:,}"


def promoted(trials: Iterable[FrozenTrial], to: Rung) -> list[FrozenTrial]:
    """The candidates of the rung below that go up to ``to``: each band's best ``to.keep``."""
    return [t for band in ranked_by_bucket(trials, to.buckets) for t in band[: to.keep]]
