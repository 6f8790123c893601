"""Pictures of what users see, taken with headless Chromium: the report of a search and the best trial
in optuna-dashboard (its note with the layer table).

    python tools/screenshots.py --storage sqlite:///studies/mnist.db --study NAME [--out docs]
    python tools/screenshots.py --storage sqlite:///studies/front.db --study front --front   # docs/front.png

Needs Debian's ``chromium`` (``apt-get install -y chromium``); writes ``report.png`` and
``dashboard.png`` into ``--out``; with ``--front``, only ``front.png``: a front search's accuracy
against parameters, as the report draws it.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nas.results.front import front_figure
from nas.results.report import write_report
from nas.results.query import best_trials, open_study


def chromium(url: str, png: Path, width: int = 1400, height: int = 1100) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("tools/screenshots.py: error: no chromium on PATH; apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
                        "--virtual-time-budget=20000", f"--screenshot={png}", url],
                       check=True, capture_output=True, timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study")
    parser.add_argument("--artifacts", help="the search's artifact folder, for the dashboard")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--front", action="store_true", help="only the front figure, as front.png")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(args.storage, args.study)
    if args.front:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "front.html"
            figure = front_figure(study).update_layout(width=1000, height=620)
            figure.write_html(page, include_plotlyjs=True, config={"displayModeBar": False})
            chromium(page.resolve().as_uri(), out / "front.png", width=1020, height=640)
        print(f"wrote {out / 'front.png'}")
        return
    with tempfile.TemporaryDirectory() as tmp:  # the page itself (megabytes of plotly.js) stays out of the repo
        report = Path(tmp) / "report.html"
        write_report(study, report)
        chromium(report.resolve().as_uri(), out / "report.png", height=2400)
    port = free_port()
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), args.storage, "--host", "127.0.0.1",
               "--port", str(port)] + (["--artifact-dir", args.artifacts] if args.artifacts else [])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        summaries = optuna_summaries(args.storage)
        study_id = summaries[study.study_name]
        best = best_trials(study)
        number = best[0].number if best else 0
        chromium(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials?numbers={number}",
                 out / "dashboard.png", height=1300)
    finally:
        server.terminate()
        server.wait(10)
    print(f"wrote {out / 'report.png'} and {out / 'dashboard.png'}")


def optuna_summaries(url: str) -> dict[str, int]:
    import optuna

    return {s.study_name: s._study_id for s in optuna.get_all_study_summaries(url)}


if __name__ == "__main__":
    main()
