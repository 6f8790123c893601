"""Neural architecture search for tiny MNIST CNNs: spec -> builder -> trainer -> search.

The names a Python user needs (docs/api.md), importable from ``nas`` itself; each is loaded on first
use, so ``import nas`` (and every command) stays quick until torch is needed:

- the spec: ``ArchSpec``, ``Layer``, ``Recipe``, ``Candidate``, ``load_spec_file``, ``load_preset``,
  ``preset_names``;
- the builder: ``build_model``, ``count_params``, ``count_flops``;
- the engine: ``load_dataset``, ``make_splits``, ``train``;
- the search: ``SearchConfig``, ``run_search``, ``SearchSpace``;
- the results: ``open_study``, ``best_under``, ``retrain_candidate``, ``trials_table``, ``load_model``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "ArchSpec": "nas.arch", "Layer": "nas.arch", "Recipe": "nas.arch", "Candidate": "nas.arch",
    "load_spec_file": "nas.arch", "load_preset": "nas.arch.presets", "preset_names": "nas.arch.presets",
    "build_model": "nas.arch.builder", "count_params": "nas.arch.builder", "count_flops": "nas.arch.builder",
    "load_dataset": "nas.engine.data", "make_splits": "nas.engine.splits", "train": "nas.engine.trainer",
    "SearchConfig": "nas.search.settings", "run_search": "nas.search.run", "SearchSpace": "nas.space.space",
    "open_study": "nas.results.query", "best_under": "nas.results.query",
    "retrain_candidate": "nas.results.query", "trials_table": "nas.results.query", "load_model": "nas.results.export",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
