"""Where an epoch's time goes: one training epoch of a preset through the engine under torch.profiler,
its CPU time split into convolutions, BatchNorm, augmentation, the optimizer, the loss, the other
tensor ops, and what no op accounts for (Python, the autograd engine, allocation).

    python benchmarks/engine_profile.py --data-dir ../shared/data/mnist [--preset ref-19712] [--images 20000]
                                 [--threads 2] [--out results/profile.csv]
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from nas.arch.builder import build_model
from nas.arch.presets import load_preset
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.optim import make_optimizer
from nas.engine.trainer import train_epoch

# op name fragments -> category, first match wins (the ops of the forward pass and their backward)
CATEGORIES = [
    ("convolution", ("conv", "mkldnn_convolution", "thnn_conv", "_slow_conv")),
    ("batchnorm", ("batch_norm", "native_batch_norm")),
    ("augmentation", ("grid_sampler", "affine_grid", "grid_sample")),
    ("optimizer", ("_foreach", "sgd", "adam", "lerp", "addcmul", "addcdiv")),
    ("loss", ("log_softmax", "nll_loss", "cross_entropy", "_log_softmax")),
    ("pooling and activations", ("max_pool", "avg_pool", "adaptive", "relu", "leaky", "threshold", "dropout",
                                 "bernoulli", "mean")),
]


def category(name: str) -> str:
    low = name.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in low for k in keys)), "other tensor ops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--preset", default="ref-19712")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    candidate = load_preset(args.preset)
    data = make_splits(load_dataset(args.data_dir), subset=args.images)
    torch.manual_seed(0)
    model = build_model(candidate.arch).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, candidate.recipe)
    generator = torch.Generator().manual_seed(0)
    warm = 3 * candidate.recipe.batch_size
    train_epoch(model, optimizer, candidate.recipe, data.train_images[:warm], data.train_labels[:warm], generator)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(model, optimizer, candidate.recipe, data.train_images, data.train_labels, generator).item()
    wall = time.perf_counter() - start
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        shares[category(event.key)] += event.self_cpu_time_total / 1e6
    busy = sum(shares.values())
    threads = torch.get_num_threads()
    # Self times add up over threads for ops that run in parallel: scale the op total to the wall time.
    rows = [(cat, seconds) for cat, seconds in sorted(shares.items(), key=lambda kv: -kv[1])]
    print(f"{candidate.name}: one epoch of {args.images:,} images, batch {candidate.recipe.batch_size}, "
          f"{threads} thread(s): {wall:.2f} s wall under the profiler ({busy:.2f} s in ops)")
    print("| where the time goes | seconds (op self time) | share |")
    print("|---|---|---|")
    for cat, seconds in rows:
        print(f"| {cat} | {seconds:.2f} | {seconds / busy:.1%} |")
    outside = max(0.0, wall - busy / max(1, min(threads, 1)))
    print(f"| outside any op (Python, autograd engine, allocation): wall - op time | {outside:.2f} | "
          f"{outside / wall:.1%} of wall |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["category", "seconds", "share_of_op_time"])
            writer.writerows([(cat, round(s, 3), round(s / busy, 4)) for cat, s in rows])
            writer.writerow(["outside ops", round(outside, 3), ""])
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    print(top)


if __name__ == "__main__":
    main()
