"""``nas-bench``: one training epoch through the engine against the classic torchvision + DataLoader
loop."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from nas.cli.common import Parser, add_candidate_args, add_device_args, load_candidate, entry_point, run_cli


def bench_main(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from nas.engine.bench import run_bench
    from nas.engine.data import load_dataset
    from nas.engine.splits import make_splits
    from nas.engine.device import place

    candidate = load_candidate(args)
    placement = place(args.device, args.precision)  # resolved once, here
    device, precision = torch.device(placement.device), placement.precision
    args.data_dir = args.data_dir or os.environ.get("NAS_DATA_DIR")
    if not args.data_dir:
        raise ValueError("nas-bench needs --data-dir DIR (or NAS_DATA_DIR), a folder with the four MNIST files: "
                         "the classic loop reads the same files through torchvision")
    data = make_splits(load_dataset(args.data_dir), subset=args.subset)
    n = len(data.train_labels)
    print(f"{candidate.name}: one epoch of {n:,} images, batch {candidate.recipe.batch_size}, "
          f"rotation {candidate.recipe.rotation:g}, translate {candidate.recipe.translate:g}, device {device}, "
          f"engine {precision} (classic loop fp32)", flush=True)
    bars: dict[str, Any] = {}

    def on_batch(path: str, images: int) -> None:
        if path not in bars:
            for bar in bars.values():
                bar.close()
            bars[path] = tqdm(total=n, unit="img", desc=path, leave=False, disable=None, file=sys.stderr)
        bars[path].update(images)

    result = run_bench(candidate.arch, candidate.recipe, data, Path(args.data_dir), device, precision, on_batch)
    for bar in bars.values():
        bar.close()
    print(f"engine:     {result.engine_seconds:7.2f} s  ({n / result.engine_seconds:,.0f} img/s)")
    print(f"dataloader: {result.dataloader_seconds:7.2f} s  ({n / result.dataloader_seconds:,.0f} img/s)")
    print(result.summary())
    return 0


@entry_point("nas-bench")
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="nas-bench", description="Time one training epoch through the engine "
                                     "and through the classic torchvision + DataLoader loop.")
    add_candidate_args(parser, required=False)
    parser.set_defaults(preset="ref-19712")
    add_device_args(parser)
    parser.add_argument("--subset", type=int, metavar="N", help="time an epoch of the first N training images "
                        "(default: all 60,000)")
    parser.add_argument("--data-dir", metavar="DIR", default=None, help="folder with the four MNIST files")
    return run_cli("nas-bench", bench_main, parser, argv)
