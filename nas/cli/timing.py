"""``nas-search``'s time flags: reading them, and a time too short for one full-fidelity candidate,
either fitted with a smaller fidelity in a study of its own or refused with what would fit."""

from __future__ import annotations

import argparse
import math
from typing import Any

from nas.cli.common import quote


TIME_FLAGS = (("hours", 3600), ("minutes", 60), ("timeout", 1))  # flag, seconds per unit
MIN_IMAGES = 5000  # the fewest training images a suggested command screens on


def time_flag(args: argparse.Namespace) -> tuple[str, float, int] | None:
    """The time flag given (name, value, seconds per unit), if any."""
    given = [(name, getattr(args, name), unit) for name, unit in TIME_FLAGS if getattr(args, name) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --timeout SECONDS, --minutes M or --hours H, not {' and '.join('--' + g[0] for g in given)}")
    return given[0] if given else None


def timeout_of(args: argparse.Namespace) -> float | None:
    """Seconds of the run, from whichever of --timeout, --minutes and --hours was given."""
    given = time_flag(args)
    if given is None:
        return None
    name, value, unit = given
    if name != "timeout" and not 0 < value <= 720 * 3600 / unit:
        raise ValueError(f"--{name} must be between 0 and {720 * 3600 // unit:,}, got {value:g}")
    return value * unit


def too_short(args: argparse.Namespace, words: list[str], config: Any, e: Any) -> str:
    """A refused time, said with the flag the user gave: what it would need, whether a busy machine
    inflates that, and the nearest command that fits the time given."""
    import os

    name, value, unit = time_flag(args)
    needed = math.ceil(e.needed / unit * 10) / 10 if unit > 1 else e.needed
    line = (f"--{name} {value:g} cannot hold even one full-fidelity candidate: promoting and training it takes "
            f"about {e.need:,.0f} s on this machine (measured)")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        line += f"; the machine is busy (load {load:.1f} on {cores} cores), which inflates that estimate"
    line += f"; ask for --{name} {needed:g} or more"
    fitted = fitting_fidelity(e)
    if fitted is None:  # even one epoch on the fewest images would not fit: only more time helps
        return line
    return f"{line}, or fit the time with fewer epochs and images: {fitting_command(words, config, *fitted)}"


def fitting_fidelity(e: Any) -> tuple[int, int] | None:
    """The largest full fidelity (epochs, training images) the time that ``e`` refused could hold: fewer
    epochs first, then fewer images (one epoch on at least MIN_IMAGES, or half a smaller set's); None if
    none fits."""
    # a margin of 10 %: the screening rungs do not shrink with the full fidelity
    held = e.epochs * e.images * 0.9 * e.fitting_share()  # epochs x images
    if held >= e.images:
        return int(held // e.images), e.images
    step = 1000 if e.images >= 10_000 else 100
    images = int(held) // step * step
    return (1, images) if images >= min(MIN_IMAGES, e.images // 2) else None


def fitted_study(config: Any, epochs: int, images: int) -> str:
    """A study of its own for a fitted fidelity, named after the one asked for and the fidelity, so it
    never meets a study made at another."""
    from nas.search.opening import read_search

    return f"{read_search(config).name}-{epochs}ep-" + (f"{images // 1000}k" if images % 1000 == 0 else f"{images}img")


def earlier_fits(config: Any) -> list[tuple[int, int]]:
    """The fitted fidelities (epochs, images) the storage already holds a study of for this search,
    the dearest first: a run of the same command resumes one rather than start another."""
    import re

    from nas.search.opening import read_search
    from nas.store.storage import StorageError, make_storage
    from nas.store.study import study_names

    base = read_search(config).name
    pattern = re.compile(rf"{re.escape(base)}-(\d+)ep-(\d+)(k|img)")
    try:
        names = study_names(make_storage(config.storage, mode="read"))
    except StorageError:  # no database yet
        return []
    fits = [(int(m[1]), int(m[2]) * (1000 if m[3] == "k" else 1)) for m in map(pattern.fullmatch, names) if m]
    return sorted(fits, key=lambda f: f[0] * f[1], reverse=True)


def fitting_command(words: list[str], config: Any, epochs: int, images: int) -> str:
    """The command given (``words``) with its --study, --epochs and --subset, as one word or two, replaced."""
    flags = ("--epochs", "--subset", "--study")
    kept = [a for i, a in enumerate(words) if not a.startswith(flags) and not (i and words[i - 1] in flags)]
    return " ".join(quote(a) for a in ["nas-search", *kept, "--study", fitted_study(config, epochs, images),
                                       "--epochs", str(epochs), "--subset", str(images)])


def search_in_time(args: argparse.Namespace, words: list[str], config: Any, command: str,
                   **hooks: Any) -> tuple[Any, Any]:
    """The search, and the config it ran with. Where the time asked cannot hold one full-fidelity
    candidate and the fidelity was left to the tool (no --epochs or --subset), it runs at the largest
    that fits (``fitting_fidelity``) in a study of its own, said in one line; else the refusal says
    what would fit."""
    from dataclasses import replace

    from nas.search.plan import TimeTooShort
    from nas.search.run import run_search

    asked, tried, earlier = config, set(), None
    for _ in range(4):  # the fitted run measures again, and may need a little less
        try:
            return run_search(config, command=command, **hooks), config
        except TimeTooShort as e:
            refused = e  # ``e`` is unbound after the except block
            if time_flag(args) is None:
                raise
            chosen = args.epochs is not None or args.subset is not None
            fitted = None if chosen else fitting_fidelity(e)
            if fitted is None:
                raise ValueError(too_short(args, words, asked, e)) from None
            tried.add((e.epochs, e.images))
            # An earlier run's fit is resumed where it is at most twice as dear as this measurement's:
            # each run measures anew, and 3 then 2 epochs made two studies of one command.
            earlier = earlier_fits(asked) if earlier is None else earlier
            resumable = [f for f in earlier if f not in tried and f[0] * f[1] <= 2 * fitted[0] * fitted[1]]
            epochs, images = resumable[0] if resumable else fitted
            name = fitted_study(asked, epochs, images)
            flag, value, _ = time_flag(args)
            print(f"--{flag} {value:g} cannot hold one candidate at the full fidelity ({e.need:,.0f} s measured): "
                  f"searching at {epochs} epoch{'s' * (epochs > 1)} x {images:,} images instead, in study {name!r}"
                  + (" (resumed)" if resumable else ""), flush=True)
            config = replace(asked, study=name, settings={**asked.settings, "epochs": epochs, "subset": images})
    raise ValueError(too_short(args, words, asked, refused))
