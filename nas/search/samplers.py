"""The sampler of the screening rung and the pruner of the final one, as a run asks for them."""

from __future__ import annotations

import warnings

import optuna

from nas.search.settings import SearchConfig


def make_sampler(config: SearchConfig, worker: int, trials_before: int) -> optuna.samplers.BaseSampler:
    # Workers, and runs resuming a study, must not replay the same random proposals.
    seed = config.seed + 1000 * worker + trials_before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=20, seed=seed)  # generations within a short run
        # multivariate + group: the space is conditional (blocks, convs per block) and its parameters
        # interact; constant_liar keeps workers (here or on other machines) from proposing alike.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10,
                                          constant_liar=True)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # The first trials (the references) run in full and set the bar; no verdict on epoch 1.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()
