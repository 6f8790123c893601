"""The fidelity plan: successive halving over rungs of increasing training cost.

A *fidelity* is "E epochs on N training images", trained from scratch with the recipe's whole
schedule compressed into the E epochs (``Recipe.compressed``). Rung 0 screens as many sampled
candidates as the run allows (``trials``, or the time left after reserving the later rungs); each
later rung trains the best ``1/promote`` of the rung below, ranked by validation accuracy at that
rung's fidelity; the last rung trains ``finalists`` candidates at full fidelity and picks the
winner. Each rung is its own Optuna study, so the sampler (in rung 0) only ever compares
accuracies of one fidelity.

Times are planned from measurements: each trained trial records its microseconds per training
image-epoch and per evaluated image, so a candidate's cost at any fidelity is known once it has
been screened, and the later rungs' time is reserved from the candidates that would be promoted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterable

from optuna.trial import FrozenTrial

from nas.config import MAX_EPOCHS, SettingError, StudySettings
from nas.record import TrialRecord, key_of

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
    keep: int | None  # candidates trained per round; None: rung 0, open-ended
    study_name: str
    final: bool

    @property
    def label(self) -> str:
        return label(self.epochs, self.images)

    @property
    def evaluations(self) -> int:
        """The final rung validates after every epoch (learning curves, pruning); screening at the end."""
        return self.epochs if self.final else 1


def make_rungs(name: str, settings: StudySettings) -> list[Rung]:
    fidelities = [parse_fidelity(r) for r in settings.rungs] + [(settings.epochs, None)]
    count = len(fidelities)
    rungs = []
    for i, (epochs, images) in enumerate(fidelities):
        final = i == count - 1
        keep = None if i == 0 else settings.finalists * settings.promote ** (count - 1 - i)
        study_name = name if final else f"{name}.rung{i}"
        rungs.append(Rung(i, epochs, min(images or settings.train_images, settings.train_images), keep, study_name,
                          final))
    return rungs


# ---------------------------------------------------------------- costs


@dataclass(frozen=True)
class Rates:
    """A candidate's measured speed: microseconds per training image-epoch and per evaluated image."""

    train_us: float
    eval_us: float

    def seconds(self, rung: Rung, val_images: int) -> float:
        return (self.train_us * rung.images * rung.epochs + self.eval_us * val_images * rung.evaluations) / 1e6

    def scaled(self, factor: float) -> Rates:
        return Rates(self.train_us * factor, self.eval_us * factor)

    @classmethod
    def of(cls, record: TrialRecord) -> Rates | None:
        if record.train_us is None or record.eval_us is None:
            return None
        return cls(record.train_us, record.eval_us)


def rung_seconds(rung: Rung, rates: list[Rates], val_images: int, jobs: int) -> float:
    """Wall time of training these candidates at ``rung`` with ``jobs`` workers in parallel."""
    if not rates:
        return 0.0
    loads = [0.0] * min(jobs, len(rates))
    for seconds in sorted((r.seconds(rung, val_images) for r in rates), reverse=True):
        loads[loads.index(min(loads))] += seconds  # the next free worker takes it
    return max(loads)


def reserve_seconds(rungs: list[Rung], ranked: list[Rates], val_images: int, jobs: int,
                    final: list[Rates] | None = None) -> float:
    """Time the rungs after rung 0 will take, if the best-ranked screened candidates go up.
    ``final``: the best-ranked candidates' rates at the final rung's precision, where it is not
    screening's (fp32 finalists after bf16 screening); else the screening rates serve every rung."""
    total = 0.0
    for rung in rungs[1:]:
        rates = final if rung.final and final else ranked
        chosen = rates[: rung.keep]
        if len(chosen) < (rung.keep or 0) and rates:  # not screened enough yet: assume average ones
            mean = Rates(sum(r.train_us for r in rates) / len(rates), sum(r.eval_us for r in rates) / len(rates))
            chosen = chosen + [mean] * (rung.keep - len(chosen))
        total += rung_seconds(rung, chosen, val_images, jobs)
    return total


def later_seconds(rungs: list[Rung], estimate: Rates, val_images: int, jobs: int) -> float:
    """Time the rungs after screening take for average candidates: what a timeout must leave them."""
    return sum(rung_seconds(r, [estimate] * (r.keep or 0), val_images, jobs) for r in rungs[1:])


def fit_rungs(rungs: list[Rung], estimate: Rates | None, val_images: int, jobs: int, timeout: float | None,
              screening_share: float = 0.5) -> list[Rung]:
    """The rungs with their sizes cut, if need be, so the later rungs of an average candidate take
    at most ``1 - screening_share`` of the time: a short run keeps fewer finalists rather than
    screening nothing. Sizes shrink by whole finalists (the ratio between rungs stays). A timeout
    too short for even one finalist is refused: the run could not end on time."""
    if timeout is None or estimate is None or len(rungs) == 1:
        return rungs
    finalists = rungs[-1].keep or 1
    ratio = [(r.keep or 0) / finalists for r in rungs]
    for f in range(finalists, 0, -1):
        trial = [replace(r, keep=None if r.index == 0 else max(1, round(ratio[r.index] * f))) for r in rungs]
        need = later_seconds(trial, estimate, val_images, jobs)
        if need <= (1 - screening_share) * timeout:
            return trial
    if need >= timeout:
        raise SettingError("timeout", f"{timeout:,.0f} s cannot hold even one full-fidelity candidate: promoting "
                           f"and training it takes about {need:,.0f} s on this machine (measured); ask for at least "
                           f"{math.ceil(need * 1.5 / 60) * 60:,} s, or lower epochs or subset")
    return trial  # one finalist, less screening


# ---------------------------------------------------------------- promotion


def ranked(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trained trials of one rung, best validation accuracy first (ties: earlier first), one per
    candidate (a duplicate's original stands for it)."""
    seen: set[str] = set()
    out = []
    candidates = [(t, TrialRecord.of(t)) for t in trials]
    candidates = [(t, r) for t, r in candidates if r.has_result and r.outcome != "duplicate"
                  and r.outcome != "diverged" and t.state.is_finished()]
    for t, r in sorted(candidates, key=lambda tr: (-tr[1].val_acc, tr[0].number)):
        key = key_of(t) or str(t.number)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def plan_lines(rungs: list[Rung], estimate: Rates | None, val_images: int, jobs: int, trials: int | None,
               timeout: float | None) -> list[str]:
    """The plan shown at the start of a run: rungs, candidates per rung, estimated time."""
    lines = []
    reserve = 0.0
    for rung in rungs[1:]:
        seconds = rung_seconds(rung, [estimate] * (rung.keep or 0), val_images, jobs) if estimate else math.nan
        reserve += seconds
        lines.append((rung, rung.keep, seconds))
    first = rungs[0]
    each0 = estimate.seconds(first, val_images) if estimate else math.nan
    if trials is not None:
        n0 = trials
        if timeout is not None and estimate:
            n0 = min(trials, max(0, int((timeout - reserve) / each0 * jobs)))
    elif timeout is not None and estimate:
        n0 = max(0, int((timeout - reserve) / each0 * jobs))
    else:
        n0 = None
    seconds0 = (n0 or 0) * each0 / jobs
    out = []
    for rung, n, seconds in [(first, n0, seconds0), *lines]:
        what = "the best" if rung.index else ("about" if trials is None else "up to")
        each = f", ~{estimate.seconds(rung, val_images):,.0f} s each" if estimate else ""
        total = f", ~{seconds / 60:,.1f} min" if estimate and not math.isnan(seconds) else ""
        role = "full fidelity" if rung.final else ("screening" if rung.index == 0 else "promotion")
        count = f"{what} {n}" if n is not None else "as many as time allows"
        noun = "candidate" if n == 1 else "candidates"
        out.append(f"  rung {rung.index} ({role}, {rung.label}, study {rung.study_name!r}): {count} {noun}"
                   f"{each}{total}")
    if estimate:
        out.append(f"  estimated total: ~{(seconds0 + reserve) / 60:,.1f} min with {jobs} worker(s)"
                   + (f" (asked: {timeout / 60:,.1f} min)" if timeout else ""))
    return out
