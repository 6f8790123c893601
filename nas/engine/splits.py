"""A data set split into train / validation / test: validation held out of the training images
(seeded, the same number per class), an optional training subset (each class in proportion); the test
images are only ever used to report."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from nas.engine.data import DataError, DataInfo, Dataset


@dataclass(frozen=True)
class Splits:
    """Images (uint8, N x S x S or N x C x S x S) and labels of each split; ``val_*`` are None without a
    holdout; ``info`` says what the images are (shape, classes, normalization)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DataInfo = field(default_factory=DataInfo)

    def to(self, device: torch.device | str) -> Splits:
        tensors = (getattr(self, f.name) for f in fields(self) if f.name != "info")
        return Splits(*(None if t is None else t.to(device) for t in tensors), info=self.info)

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def describe(self) -> str:
        val = f"{len(self.val_labels):,}" if self.val_labels is not None else "none"
        return f"train {len(self.train_labels):,}, validation {val}, test {len(self.test_labels):,}"


def make_splits(dataset: Dataset, holdout: int = 0, subset: int | None = None, seed: int = 0) -> Splits:
    """Hold out ``holdout`` training images for validation (seeded, equal per class), then keep
    the first ``subset`` of the rest for training (each class in proportion)."""
    labels = dataset.train_labels
    n = len(labels)
    if not 0 <= holdout < n:
        raise DataError(f"must be between 0 and {n - 1}, got {holdout}", "holdout")
    classes = torch.unique(labels).tolist()
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(n, dtype=torch.bool)
    if holdout:
        for rank, c in enumerate(classes):
            members = torch.nonzero(labels == c).flatten()
            take = holdout // len(classes) + (rank < holdout % len(classes))
            if take > len(members):
                raise DataError(f"{holdout} needs {take} images of class {c}, which has only {len(members)}", "holdout")
            is_val[members[torch.randperm(len(members), generator=generator)[:take]]] = True
    train_idx = torch.nonzero(~is_val).flatten()
    if subset is not None:
        if not 0 < subset <= len(train_idx):
            raise DataError(f"must be between 1 and {len(train_idx):,} (the training images left), got {subset}",
                            "subset")
        train_idx = stratified_first(train_idx, labels[train_idx], subset)
    val_idx = torch.nonzero(is_val).flatten()
    return Splits(
        dataset.train_images[train_idx], labels[train_idx],
        dataset.train_images[val_idx] if holdout else None, labels[val_idx] if holdout else None,
        dataset.test_images, dataset.test_labels, dataset.info,
    )


def stratified_first(indices: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The first images of each class, as many of each as its share of ``k`` (largest remainder)."""
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * k / len(labels)
    take = exact.floor().long()
    for i in torch.argsort(exact - take, descending=True)[: k - int(take.sum())]:
        take[i] += 1
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:t] for c, t in zip(classes, take)])
    return indices[keep.sort().values]
