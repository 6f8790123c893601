"""The time plan: what each candidate costs at each rung, from measured speeds, and how a run's
time is shared between screening and the rungs after it.

Each trained trial records its microseconds per training image-epoch and per evaluated image, so
a candidate's cost at any fidelity is known once it has been screened, and the later rungs' time is
reserved from the candidates that would be promoted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nas.errors import SettingError
from nas.store.record import TrialRecord
from nas.search.rungs import Rung


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


# The full-fidelity rung's time per image over screening's, where their precisions differ: measured
# 1.1-1.5x (fp32 after native bf16); a probe on a busy machine read 0.2x and 10x, which closed a
# 5-minute run's screening after two candidates, so a probe is held to this range: never cheaper than
# screening, and at most 2x, since native bf16 does at most twice fp32's multiply-adds per cycle
# (AVX-512 BF16, tensor cores against TF32).
PRECISION_RATIO = (1.0, 2.0)


def precision_ratio(slow: float, fast: float) -> float:
    """The probed ratio of the final precision's time to screening's, within PRECISION_RATIO."""
    low, high = PRECISION_RATIO
    return min(high, max(low, slow / fast)) if fast > 0 else low


def rung_seconds(rung: Rung, rates: list[Rates], val_images: int, jobs: int) -> float:
    """Wall time of training these candidates at ``rung`` with ``jobs`` workers in parallel."""
    if not rates:
        return 0.0
    loads = [0.0] * min(jobs, len(rates))
    for seconds in sorted((r.seconds(rung, val_images) for r in rates), reverse=True):
        loads[loads.index(min(loads))] += seconds  # the next free worker takes it
    return max(loads)


def mean_rates(rates: list[Rates]) -> Rates:
    return Rates(sum(r.train_us for r in rates) / len(rates), sum(r.eval_us for r in rates) / len(rates))


def reserve_seconds(rungs: list[Rung], ranked: list[list[Rates]], val_images: int, jobs: int,
                    final: list[list[Rates]] | None = None, band_estimates: list[Rates] | None = None,
                    more: int | None = None) -> float:
    """Time the rungs after rung 0 will take, if the best-ranked screened candidates of each budget's
    band (one band without budgets) go up. ``final``: their rates at the final rung's precision,
    where it is not screening's (fp32 finalists after bf16 screening); else the screening rates
    serve every rung. A band screened too little is filled with its ``band_estimates`` (the plan's, one
    per band), else with the mean of what is screened: a front search's first screened candidate is often
    a 20,000-parameter reference, and taking it for every band reserved 4x the plan and closed screening
    after one candidate. ``more``: how many more each band may still screen; a rung promotes no more
    than its band has (None: as many as it keeps)."""
    everyone = [r for band in ranked for r in band]
    total = 0.0
    for rung in rungs[1:]:
        chosen = []
        for i, band in enumerate(final if rung.final and final else ranked):
            picked = band[: rung.keep]
            size = (rung.keep or 0) if more is None else min(rung.keep or 0, len(band) + more)
            if len(picked) < size and everyone:  # not screened enough yet: assume typical ones
                fill = band or ([band_estimates[i]] if band_estimates and len(band_estimates) == len(ranked) else everyone)
                picked = picked + [mean_rates(fill)] * (size - len(picked))
            chosen += picked
        total += rung_seconds(rung, chosen, val_images, jobs)
    return total


def screening_fits(rungs: list[Rung], ranked: list[list[Rates]], val_images: int, jobs: int, left: float,
                   final: list[list[Rates]] | None = None, band_estimates: list[Rates] | None = None) -> bool:
    """Whether one more screened candidate still leaves ``left`` seconds for the later rungs, as many
    as would go up with it: a rung promotes no more than was screened, so a reserve for full rungs
    closed a 4-minute run's screening after one candidate and left it 30 % of its time unspent. A
    budget with no candidate screened yet would get no finalist, so it may spend the time reserved
    for it on screening (the other budgets' reserve stays whole)."""
    if reserve_seconds(rungs, ranked, val_images, jobs, final, band_estimates, more=1) < left:
        return True
    filled = [i for i, band in enumerate(ranked) if band]
    if len(filled) == len(ranked):
        return False
    return reserve_seconds(rungs, [ranked[i] for i in filled], val_images, jobs,
                           [final[i] for i in filled] if final else None, more=1) < left


def typical(rung: Rung, estimate: Rates, bands: list[Rates] | None = None, final_factor: float = 1.0) -> list[Rates]:
    """The rates of the candidates a later rung trains per round, when nothing is screened yet: an average
    candidate each, or for a front search each budget's own typical size (a 2,000-parameter net trains
    faster than a 20,000-parameter one). The estimates are screening's; the full-fidelity rung trains
    ``final_factor`` times slower per image where its precision is another (fp32 after bf16)."""
    factor = final_factor if rung.final else 1.0
    if bands and rung.buckets and len(bands) == len(rung.buckets):
        return [band.scaled(factor) for band in bands for _ in range(rung.keep or 0)]
    return [estimate.scaled(factor)] * rung.per_round


def later_seconds(rungs: list[Rung], estimate: Rates, val_images: int, jobs: int,
                  bands: list[Rates] | None = None, final_factor: float = 1.0) -> float:
    """Time the rungs after screening take for typical candidates: what a timeout must leave them."""
    return sum(rung_seconds(r, typical(r, estimate, bands, final_factor), val_images, jobs) for r in rungs[1:])


def fit_rungs(rungs: list[Rung], estimate: Rates | None, val_images: int, jobs: int, timeout: float | None,
              screening_share: float = 0.5, bands: list[Rates] | None = None, final_factor: float = 1.0) -> list[Rung]:
    """The rungs with their sizes cut, if need be, so the later rungs of an average candidate take
    at most ``1 - screening_share`` of the time: a short run keeps fewer finalists rather than
    screening nothing. Sizes shrink by whole finalists (the ratio between rungs stays). A timeout
    too short for even one finalist is refused: the run could not end on time."""
    if timeout is None or estimate is None:
        return rungs
    if len(rungs) == 1:  # one fidelity: the time must hold at least one candidate of it
        need = rung_seconds(rungs[0], [estimate], val_images, 1)
        if need >= timeout:
            raise TimeTooShort(timeout, need, rungs[-1].epochs, rungs[-1].images)
        return rungs
    finalists = rungs[-1].keep or 1
    ratio = [(r.keep or 0) / finalists for r in rungs]
    for f in range(finalists, 0, -1):
        trial = [replace(r, keep=None if r.index == 0 else max(1, round(ratio[r.index] * f))) for r in rungs]
        need = later_seconds(trial, estimate, val_images, jobs, bands, final_factor)
        if need <= (1 - screening_share) * timeout:
            return trial
    if need >= timeout:
        raise TimeTooShort(timeout, need, rungs[-1].epochs, rungs[-1].images)
    return trial  # one finalist, less screening


class TimeTooShort(SettingError):
    """The time asked cannot hold one full-fidelity candidate of ``epochs`` x ``images``; ``needed``: what
    would (seconds, half of it screening), measured on this machine as it is now."""

    def __init__(self, timeout: float, need: float, epochs: int, images: int) -> None:
        self.timeout, self.need, self.epochs, self.images = timeout, need, epochs, images
        self.needed = math.ceil(need * 1.5 / 60) * 60
        super().__init__("timeout", f"{timeout:,.0f} s cannot hold even one full-fidelity candidate: promoting and "
                         f"training it takes about {need:,.0f} s on this machine (measured); ask for at least "
                         f"{self.needed:,} s, or lower `epochs` or `subset`")

    def fitting_share(self) -> float:
        """How much cheaper the full fidelity must be for the time asked to hold it (epochs x images)."""
        return min(1.0, 0.5 * self.timeout / self.need)


def plan_lines(rungs: list[Rung], estimate: Rates | None, val_images: int, jobs: int, trials: int | None,
               timeout: float | None, bands: list[Rates] | None = None, final_factor: float = 1.0) -> list[str]:
    """The plan shown at the start of a run: rungs, candidates per rung, estimated time."""
    lines = []
    reserve = 0.0
    for rung in rungs[1:]:
        seconds = rung_seconds(rung, typical(rung, estimate, bands, final_factor), val_images, jobs) if estimate else math.nan
        reserve += seconds
        lines.append((rung, rung.per_round, seconds))
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
        chosen = typical(rung, estimate, bands, final_factor) if estimate and rung.index else [estimate]
        each = f", ~{mean_rates(chosen).seconds(rung, val_images):,.0f} s each" if estimate and chosen else ""
        total = f", ~{seconds / 60:,.1f} min" if estimate and not math.isnan(seconds) else ""
        role = "full fidelity" if rung.final else ("screening" if rung.index == 0 else "promotion")
        count = f"{what} {n}" if n is not None else "as many as time allows"
        noun = "candidate" if n == 1 else "candidates"
        if rung.index and rung.buckets:
            noun += f" ({rung.keep} per budget: {', '.join(f'< {b:,}' for b in rung.buckets)})"
        out.append(f"  rung {rung.index} ({role}, {rung.label}, study {rung.study_name!r}): {count} {noun}"
                   f"{each}{total}")
    if estimate:
        out.append(f"  estimated total: ~{(seconds0 + reserve) / 60:,.1f} min with {jobs} worker(s)"
                   + (f" (asked: {timeout / 60:,.1f} min)" if timeout else ""))
    return out
