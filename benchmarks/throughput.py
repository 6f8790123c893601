"""CPU throughput choices, measured: workers x threads, bf16 autocast, evaluation batch size, and
torch.compile. Run it on an otherwise idle machine.

    python benchmarks/throughput.py --data-dir ../shared/data/mnist [--images 10000] [--candidates 6]

1. Candidate-epochs per hour: the same candidates (references and random samples of the default
   space) each trained one epoch on ``--images`` images, by one worker with all cores' threads, and
   by one worker per core with one thread each, fp32 and bf16.
2. Evaluation: seconds to score the 10,000 validation images at several batch sizes.
3. torch.compile: compile time and epoch time against eager for one network, and after how many
   epochs compiling pays back.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import optuna
import torch

from nas.arch.budget import check_budget
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.optim import make_optimizer
from nas.engine.trainer import accuracy, train_epoch
from nas.arch.builder import build_model
from nas.space.space import space_file
from nas.space.space import SearchSpace


def candidates(count: int):
    space = SearchSpace.from_file(space_file())
    chosen = [space.reference(n) for n in space.references][:count]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    while len(chosen) < count:
        trial = study.ask()
        c = space.sample(trial)
        study.tell(trial, 0.0)
        if check_budget(c.arch).accepted:
            chosen.append(c)
    return chosen


def epoch_seconds(candidate, images, labels, bf16: bool) -> float:
    torch.manual_seed(0)
    model = build_model(candidate.arch).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, candidate.recipe)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    train_epoch(model, optimizer, candidate.recipe, images, labels, generator, precision="bf16" if bf16 else "fp32").item()
    return time.perf_counter() - start


def _worker(args) -> float:
    """Seconds this worker spent training its share (data loading not counted)."""
    chunk, threads, bf16, data_dir, n = args
    torch.set_num_threads(threads)
    data = make_splits(load_dataset(data_dir), 10_000, n)
    return sum(epoch_seconds(c, data.train_images, data.train_labels, bf16) for c in chunk)


def workers_table(pool, data_dir: str, n: int, formats: tuple[bool, ...]) -> None:
    cores = os.cpu_count() or 1
    print(f"1. candidate-epochs per hour ({len(pool)} candidates, one epoch of {n:,} images each)")
    for bf16 in formats:
        for workers in (1, cores):
            threads = max(1, cores // workers)
            chunks = [pool[i::workers] for i in range(workers)]
            with multiprocessing.get_context("spawn").Pool(workers) as p:
                busy = p.map(_worker, [(c, threads, bf16, data_dir, n) for c in chunks])
            wall = max(busy)  # the workers train side by side; the slowest one sets the pace
            print(f"   {'bf16' if bf16 else 'fp32'}  {workers} worker(s) x {threads} thread(s): {wall:6.1f} s wall, "
                  f"{len(pool) / wall * 3600:6.0f} candidate-epochs/hour", flush=True)


def eval_table(pool, data) -> None:
    print("2. scoring the 10,000 validation images (fp32, all threads), seconds by batch size")
    model = build_model(pool[2].arch).to(memory_format=torch.channels_last)
    for batch in (250, 500, 1000, 2000, 5000, 10_000):
        accuracy(model, data.val_images, data.val_labels, batch)
        start = time.perf_counter()
        accuracy(model, data.val_images, data.val_labels, batch)
        print(f"   batch {batch:>6,}: {time.perf_counter() - start:5.2f} s", flush=True)


def compile_table(pool, data) -> None:
    candidate = pool[2]
    print(f"3. torch.compile ({candidate.name}, fp32, one epoch of {len(data.train_labels):,} images)")
    eager = epoch_seconds(candidate, data.train_images, data.train_labels, False)
    torch.manual_seed(0)
    model = build_model(candidate.arch).to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    optimizer = make_optimizer(model, candidate.recipe)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    try:  # the first epoch compiles (the full batches, then the last, smaller one)
        train_epoch(compiled, optimizer, candidate.recipe, data.train_images, data.train_labels, generator).item()
    except Exception as e:  # noqa: BLE001 - report why compiling is not an option here
        print(f"   compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return
    first = time.perf_counter() - start
    start = time.perf_counter()
    train_epoch(compiled, optimizer, candidate.recipe, data.train_images, data.train_labels, generator).item()
    fast = time.perf_counter() - start
    compile_seconds = first - fast
    gain = eager - fast
    payback = compile_seconds / gain if gain > 0 else float("inf")
    print(f"   eager {eager:.1f} s/epoch; compiled: first epoch {first:.1f} s (about {compile_seconds:.0f} s of "
          f"compiling), then {fast:.1f} s/epoch: pays back after {payback:.1f} epochs of this size", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--skip", nargs="*", default=[], choices=["workers", "bf16", "eval", "compile"],
                        help="bf16: skip the bf16 rows (minutes where the CPU only emulates it)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pool = candidates(args.candidates)
    data = make_splits(load_dataset(args.data_dir), 10_000, args.images)
    if "workers" not in args.skip:
        workers_table(pool, args.data_dir, args.images, (False,) if "bf16" in args.skip else (False, True))
    if "eval" not in args.skip:
        eval_table(pool, data)
    if "compile" not in args.skip:
        compile_table(pool, data)


if __name__ == "__main__":
    main()
