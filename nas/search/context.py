"""What every worker process of a search opens once: settings, space, storage, one study per rung,
and the data on the device."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import optuna
import torch

from nas.engine.splits import Splits, stratified_first
from nas.engine.device import Placement
from nas.search.plan import Rates
from nas.search.rungs import Rung
from nas.search.settings import SearchConfig, StudySettings
from nas.space.space import SearchSpace


@dataclass
class Search:
    """What every worker process opens once: settings, space, storage, one study per rung, data."""

    config: SearchConfig
    name: str
    settings: StudySettings
    space: SearchSpace
    storage: optuna.storages.BaseStorage
    rungs: list[Rung]
    studies: list[optuna.Study]
    data: Splits  # the full-fidelity training images, validation and test, on the device
    placement: Placement  # the device and precisions, resolved once for the run
    run_id: str
    band_estimates: list[Rates] | None = None  # the plan's typical rates per budget band, before any is screened
    notes: list[str] = field(default_factory=list)  # what the run says before it starts (its known networks)
    _rung_data: dict[int, Splits] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.placement.device

    def precision_at(self, rung: Rung) -> str:
        """Full fidelity is reported, in the reported precision; the rungs below it only rank."""
        return self.placement.precision_for(ranking_only=not rung.final)

    @property
    def final(self) -> Rung:
        return self.rungs[-1]

    def data_for(self, rung: Rung) -> Splits:
        """The rung's training images: the first ``rung.images`` of the full set (each class in
        proportion, as ``make_splits`` takes a subset), same validation and test images."""
        if rung.images >= len(self.data.train_labels):
            return self.data
        if rung.index not in self._rung_data:
            keep = stratified_first(torch.arange(len(self.data.train_labels)), self.data.train_labels.cpu(), rung.images)
            keep = keep.to(self.data.train_images.device)
            self._rung_data[rung.index] = replace(self.data, train_images=self.data.train_images[keep],
                                                  train_labels=self.data.train_labels[keep])
        return self._rung_data[rung.index]
