"""The public 4,838-parameter net trained as its notebook trains it, outside the engine: torchvision's
``MNIST`` with per-image PIL transforms (``RandomResizedCrop((28, 28), (0.85, 1.0))``,
``RandomRotation(5)``, ``ToTensor``, ``Normalize``), a shuffling ``DataLoader`` of 64, Xavier-uniform
conv weights with zero biases, Adam whose rate is set once per epoch from ``np.interp(epoch, [0, 2, 5,
12], [0.001, 0.01, 0.0002, 0])``, NLL loss, 12 epochs, the final epoch's test accuracy
(docs/reference/public-nets.md). It tells whether the engine's batched on-device augmentation (bilinear
rotation and crop on the whole batch) is what separates the engine's figure from the published one.

    python benchmarks/notebook_recipe.py --data-dir ../shared/data/mnist [--seeds 0 1 2] \\
        [--csv results/notebook-recipe.csv]

The network is built by the builder from docs/reference/public-4838.json (layer for layer the
notebook's). Each finished run is appended to ``--csv`` at once (see benchmarks/rows.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from nas.arch import Recipe, load_spec_file
from nas.arch.builder import build_model
from nas.engine.bench import torchvision_root
from nas.engine.optim import PIECEWISE_AT, PIECEWISE_RATE, init_weights
from nas.results.export import cpu_name
from rows import append_row  # benchmarks/rows.py

FIELDS = ["spec", "pipeline", "seed", "epochs", "test_acc", "seconds", "threads", "cpu"]
SPEC = Path(__file__).resolve().parents[1] / "docs" / "reference" / "public-4838.json"


def train_as_published(root: str, seed: int, epochs: int = 12, max_lr: float = 0.01) -> float:
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    normalize = transforms.Normalize((0.1307,), (0.3081,))
    train_set = datasets.MNIST(root, train=True, transform=transforms.Compose([
        transforms.RandomResizedCrop((28, 28), (0.85, 1.0)), transforms.RandomRotation(5), transforms.ToTensor(),
        normalize]))
    test_set = datasets.MNIST(root, train=False, transform=transforms.Compose([transforms.ToTensor(), normalize]))
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = build_model(load_spec_file(SPEC).arch)
    init_weights(model, Recipe(init="xavier"))
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr / 10)
    rates = np.interp(np.arange(epochs + 1), [f * epochs for f in PIECEWISE_AT], [r * max_lr for r in PIECEWISE_RATE])
    for epoch in range(epochs):
        optimizer.param_groups[0]["lr"] = rates[epoch]
        model.train()
        for x, y in train_loader:
            loss = F.nll_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(test_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default="results/notebook-recipe.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        root = str(torchvision_root(Path(args.data_dir), Path(tmp)))
        for seed in args.seeds:
            start = time.perf_counter()
            acc = train_as_published(root, seed)
            row = {"spec": SPEC.stem, "pipeline": "torchvision, as published", "seed": seed, "epochs": 12,
                   "test_acc": round(acc, 4), "seconds": round(time.perf_counter() - start), "threads": args.threads,
                   "cpu": cpu_name()}
            print(row, flush=True)
            append_row(out, FIELDS, row)
    table = pd.read_csv(out).groupby("pipeline")["test_acc"].agg(["mean", "std", "count"])
    print((table * [100, 100, 1]).round(3).to_string())


if __name__ == "__main__":
    main()
