"""What ``nas-search`` shows as it runs: a line per finished trial and a status bar with the rung,
the running trials' epochs and the best validation accuracy so far at each rung. Without a terminal
(a log file, a pipe) the bar is a line of its own at least once a minute."""

from __future__ import annotations

import sys
import threading
import time

STATUS_SECONDS = 60.0  # without a terminal, the status is printed at least this often


def pct(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.2%}"


def trial_line(rung, t) -> str:
    from nas.store.record import TrialRecord

    r = TrialRecord.of(t)
    head = f"r{rung.index} #{t.number:<4d}"
    if r.outcome == "rejected":
        return head + f" rejected  params {r.params:>6,}  ({r.reason})"
    if r.outcome in ("failed", "interrupted", "running") or r.val_acc is None:
        return head + f" {r.outcome:<9} {r.reason or ''}".rstrip()
    tag = r.name
    if r.outcome == "duplicate":
        tag = f"= #{r.duplicate_of} {tag}".strip()
    if r.promoted_from is not None:
        tag = f"from r{rung.index - 1} #{r.promoted_from} {tag}".strip()
    seconds = f"{r.seconds:6.0f} s" if r.seconds is not None else "        "
    return (head + f" {r.outcome:<9} params {r.params:>6,}  val {pct(r.val_acc)}  epochs {r.epochs:>2}/{rung.epochs:<2} "
            f"{seconds}  {tag}").rstrip()


class CliReporter:
    """Lines for finished trials and messages; a status bar with the rung, the running trial's epoch,
    and the best validation accuracy so far at each rung."""

    def __init__(self, planned: dict[int, int | None]) -> None:
        self.planned = planned
        self.bar = None  # made at the first trial, after the header and the plan (not a stray "0/?" before them)
        self.quiet = not sys.stderr.isatty()  # no terminal: no bar to watch
        self.rung = -1
        self.best: dict[int, float] = {}
        self.running: dict[int, str] = {}
        self._stop = threading.Event()
        if self.quiet:  # so a status line now and then
            self._started = time.time()
            threading.Thread(target=self._status_lines, daemon=True).start()

    def status(self) -> str:
        best = " ".join(f"r{k} {v:.2%}" for k, v in sorted(self.best.items())) or "none yet"
        where = f"rung {self.rung}" if self.rung >= 0 else "starting"
        running = ", ".join(self.running.values()) or "no trial running"
        return f"[{time.time() - self._started:,.0f} s] {where}: {running} | best val {best}"

    def _status_lines(self) -> None:
        while not self._stop.wait(STATUS_SECONDS):
            print(self.status(), flush=True)

    def start(self, planned: dict[int, int | None], best: dict[int, float]) -> None:
        """The plan's candidates per rung (None: as many as the time holds) and the best validation
        accuracy each rung of the study has reached so far, this run's or earlier ones'."""
        self.planned, self.best = planned, dict(best)

    def _switch(self, rung) -> None:
        if rung.index != self.rung:
            from tqdm import tqdm

            self.rung = rung.index
            total = self.planned.get(rung.index)
            if self.bar is not None:
                self.bar.close()
            # A rung that takes as many as the time holds has no total: its count alone, never "n/?".
            counted = "{n_fmt}/{total_fmt}" if total else "{n_fmt} trained"
            self.bar = tqdm(total=total, unit="trial", disable=self.quiet, file=sys.stderr, leave=False,
                            desc=f"rung {rung.index} ({rung.label})",
                            bar_format="{desc} " + counted + " [{elapsed}]{postfix}")

    def _postfix(self) -> None:
        best = " ".join(f"r{k} {v:.2%}" for k, v in sorted(self.best.items()))
        running = ", ".join(self.running.values())
        self.bar.set_postfix_str(f"{running} | best val {best}" if best else running, refresh=True)

    def trial_started(self, rung, number, record) -> None:
        self._switch(rung)
        self.running[number] = f"#{number} epoch 0/{rung.epochs}"
        self._postfix()

    def epoch(self, rung, number, epoch, of, val_acc) -> None:
        self._switch(rung)
        self.running[number] = f"#{number} epoch {epoch}/{of}"
        self._postfix()

    def trial_finished(self, rung, t) -> None:
        from nas.store.record import TrialRecord

        self._switch(rung)
        self.running.pop(t.number, None)
        r = TrialRecord.of(t)
        self.message(trial_line(rung, t))
        if r.trained or r.outcome == "duplicate":
            self.bar.update(1)
        if r.outcome == "complete" and r.val_acc is not None and r.val_acc > self.best.get(rung.index, -1):
            self.best[rung.index] = r.val_acc
        self._postfix()

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text)  # above the bar, where there is one
        sys.stdout.flush()

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self.bar.close()
