"""The one prepared GPU check: everything the CUDA path needs shown on a real GPU, in at most 8 minutes,
with every figure written to one JSON file.

    python benchmarks/gpu_check.py --data-dir ../shared/data/mnist [--out results/gpu-check.json]

On a machine without a CUDA GPU it says so in one line and exits 0. On one with a GPU it runs, each
under its own time limit:

1. the device (name, compute capability, memory, torch's kernels for it, bf16 support, the
   precision the rule picks for screening and for reported accuracy);
2. the CUDA-marked tests (``pytest -m cuda``);
3. ``nas-bench --device cuda --preset ref-19970``: the engine against the classic loop, s/epoch;
4. one full-fidelity ``nas-train --preset found-20k --device cuda``: final test accuracy and time;
5. a short ``nas-search --device cuda --trials 200`` at reduced fidelity (3 epochs, 75 s each) with
   ``--jobs`` 1 and 4: trials per hour.

Targets on an H100-class GPU: ref-19970 epoch <= 0.15 s and >= 50x the classic loop; the default
``--trials 200`` search in <= 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def run(label: str, argv: list[str], limit: float, figures: dict) -> str:
    """Run one step under its time limit; its wall time, exit code and output tail go into ``figures``."""
    start = time.time()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, cwd=ROOT)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    figures[label] = {"seconds": round(time.time() - start, 1), "exit": code, "tail": out[-1500:]}
    print(f"{label}: exit {code}, {figures[label]['seconds']} s", flush=True)
    return out


def device_facts() -> dict:
    import torch

    from nas.engine.device import caps_of, check_kernels, choose_precision

    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    caps = caps_of(f"cuda:{index}")
    facts = {"name": torch.cuda.get_device_name(index), "capability": list(torch.cuda.get_device_capability(index)),
             "count": torch.cuda.device_count(), "memory_gb": round(total / 2**30, 1),
             "free_gb": round(free / 2**30, 1), "torch": torch.__version__, "arch_list": torch.cuda.get_arch_list(),
             "native_bf16": caps.native_bf16, "tensor_cores": caps.tensor_cores,
             "screening_precision": choose_precision("auto", caps, ranking_only=True),
             "reported_precision": choose_precision("auto", caps)}
    try:
        check_kernels(index)
        facts["kernels"] = "ok"
    except ValueError as e:
        facts["kernels"] = str(e)
    return facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NAS_DATA_DIR"))
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu-check.json"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible on this machine; nothing to check (exit 0). Run this on a "
              "machine with an NVIDIA GPU.")
        return 0
    if not args.data_dir:
        print("gpu_check: give --data-dir DIR (the four MNIST files)", file=sys.stderr)
        return 2
    figures: dict = {"device": device_facts(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(figures["device"]), flush=True)
    data = ["--data-dir", args.data_dir, "--device", "cuda"]
    run("cuda tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"], 60, figures)
    out = run("nas-bench ref-19970", [command("nas-bench"), "--preset", "ref-19970", *data], 60, figures)
    found = re.search(r"speedup ([\d.]+)x \(engine ([\d.]+) s, dataloader ([\d.]+) s", out)
    if found:
        figures["bench"] = {"speedup": float(found[1]), "engine_s": float(found[2]), "dataloader_s": float(found[3])}
    out = run("nas-train found-20k", [command("nas-train"), "--preset", "found-20k", "--json", *data], 150, figures)
    try:
        figures["train"] = {k: v for k, v in json.loads(out.strip().splitlines()[-1]).items()
                            if k in ("test_acc", "seconds", "precision", "epochs", "params")}
    except (ValueError, IndexError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 4):
            storage = f"sqlite:///{tmp}/gpu{jobs}.db"
            out = run(f"nas-search jobs {jobs}", [command("nas-search"), "--trials", "200", "--timeout", "75",
                                                  "--jobs", str(jobs), "--storage", storage, "--epochs", "3",
                                                  "--finalists", "2", "--seed", "0", *data], 100, figures)
            found = re.search(r"this run: trained (\d+) .*?; (\d+) s wall", out)
            if found:
                trained, seconds = int(found[1]), int(found[2])
                figures[f"search_jobs_{jobs}"] = {"trained": trained, "seconds": seconds,
                                                  "trials_per_hour": round(trained / max(seconds, 1) * 3600)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    if os.environ.get("OUT"):  # the device machine brings back what lies under $OUT
        shutil.copy(args.out, Path(os.environ["OUT"]) / "gpu-check.json")
    print(f"gpu_check: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
