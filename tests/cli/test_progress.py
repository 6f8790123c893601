"""nas-search's status bar on a terminal: made at the first trial, never a "0/?" total."""

import io
import re
from types import SimpleNamespace


from nas.cli.progress import CliReporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def rung(index: int):
    return SimpleNamespace(index=index, label=f"rung{index}", epochs=2)


def test_the_bar_appears_at_the_first_trial_and_a_timed_rung_shows_its_count_without_a_total(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    reporter = CliReporter({})
    reporter.start({0: None, 1: 4}, {})
    assert terminal.getvalue() == ""  # nothing before the header and the plan are printed
    reporter.trial_started(rung(0), 0, None)
    reporter.epoch(rung(0), 0, 1, 2, None)
    screening = terminal.getvalue()
    assert "rung 0 (rung0) 0 trained" in screening and "#0 epoch 1/2" in screening and "?" not in screening
    reporter.trial_started(rung(1), 7, None)
    assert re.search(r"rung 1 \(rung1\) 0/4", terminal.getvalue())
    reporter.close()


def test_without_a_terminal_no_bar_is_drawn(monkeypatch, capsys):
    reporter = CliReporter({})  # pytest's captured stderr is no terminal
    reporter.start({0: None}, {})
    reporter.trial_started(rung(0), 0, None)
    reporter.message("a line")
    reporter.close()
    out = capsys.readouterr()
    assert out.out == "a line\n" and "trained" not in out.err
