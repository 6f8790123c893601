"""What every command shares: the parser whose errors are one line, the turn of library errors into
flags, and the arguments several commands take (a network, the device, the data, seeds)."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

if TYPE_CHECKING:
    from nas.arch import Candidate


PATH_OPTIONS = ("out", "csv", "front_csv", "report", "export", "artifacts", "data_dir", "spec", "space", "storage")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block): what is wrong and where to look."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        for name in PATH_OPTIONS:  # '' would mean the current folder (or nothing) far into the run
            if getattr(parsed, name, None) == "":
                self.error(f"{flag(name)}: an empty path; give a file or folder name")
        return parsed


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


FLAGS = {"references": "--no-references", "settings": "--settings"}


def flag(name: str) -> str:
    """The command-line flag of a library parameter."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def entry_point(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A command's ``main``: Ctrl-C at any moment, even while it imports torch in its first second,
    is one line and exit 130, not a traceback."""
    import functools

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                fail(prog, "interrupted", 130)
        return guarded
    return wrap


def run_cli(prog: str, main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: list[str] | None) -> int:
    """Parse, run, and turn the errors a user can fix into one line and a non-zero exit."""
    args = parser.parse_args(argv)
    from nas.errors import SettingError

    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        return main(args) or 0
    except SettingError as e:
        message = re.sub(r"`(\w+)`", lambda m: flag(m.group(1)), e.message)  # the other parameters it names
        fail(prog, f"{flag(e.name)}: {message}")
    except (ValueError, OSError) as e:
        fail(prog, str(e))
    except RuntimeError as e:  # the one runtime error a setting causes: a GPU out of memory
        if "out of memory" not in str(e):
            raise
        fail(prog, "the GPU ran out of memory; run fewer --jobs on it, or use --device cpu", 1)
    except KeyboardInterrupt:
        fail(prog, "interrupted", 130)


def load_candidate(args: argparse.Namespace) -> Candidate:
    from nas.arch import load_spec_file
    from nas.arch.presets import load_preset

    if args.spec:  # before the preset: nas-bench has a default preset
        candidate = load_spec_file(args.spec)
        return candidate if candidate.name else replace(candidate, name=Path(args.spec).stem)
    return load_preset(args.preset)


def add_candidate_args(parser: argparse.ArgumentParser, required: bool = True) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--preset", metavar="NAME", help="a reference network (see nas-show --list)")
    group.add_argument("--spec", metavar="FILE", help="a spec file (JSON: arch and recipe), e.g. one written by "
                       "nas-export (spec.json)")
    return group


def add_device_args(parser: argparse.ArgumentParser) -> None:
    from nas.engine.device import DEFAULT_DEVICE, DEFAULT_PRECISION, PRECISIONS

    parser.add_argument("--device", default=DEFAULT_DEVICE, help="auto (default: CUDA where there is one), cpu, "
                        "cuda or cuda:N")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, help=f"{', '.join(PRECISIONS)} (default "
                        f"{DEFAULT_PRECISION}: fp32 wherever an accuracy is reported; reduced precision only to "
                        "rank candidates, where the device has it natively)")


def add_data_args(parser: argparse.ArgumentParser, subset: bool = True) -> None:
    add_device_args(parser)
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four IDX files (MNIST's names), .gz or "
                        "not (default: $NAS_DATA_DIR, else download MNIST with torchvision)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, order, augmentation and split")
    if subset:
        parser.add_argument("--subset", type=int, metavar="N", help="train on the first N training images (stratified)")




def check_seed(seed: int, name: str = "--seed") -> int:
    from nas.search.settings import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be at least 0 and at most {MAX_SEED:,}, got {seed}")
    return seed


def parse_seeds(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    try:
        seeds = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"--seeds takes seeds separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not seeds or len(seeds) > 100 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds takes 1 to 100 different seeds, got {text!r}")
    for seed in seeds:
        check_seed(seed, "--seeds")
    return seeds


def check_epochs(epochs: int) -> int:
    from nas.arch import MAX_EPOCHS

    if not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"--epochs must be between 1 and {MAX_EPOCHS}, got {epochs}")
    return epochs


def quote(text: str) -> str:
    return shlex.quote(text)


def redacted(url: str) -> str:
    from nas.store.urls import redact

    return redact(url)
