"""Search spaces: a YAML data file of distributions, and the one function that samples from it.

The file gives a distribution (or a fixed value) for each *role* (:mod:`nas.space.roles`); :meth:`SearchSpace.sample`
walks the conv-block / transition / GAP-head family, asks the trial for each role at each
position it is needed (``channels`` becomes ``s1_c1_ch``, ``s1_c2_ch``, ...) and returns a
:class:`Candidate`. It is the only code that calls ``trial.suggest_*``.

Buildability is guaranteed by construction: a 3x3 conv may be unpadded (``padding`` is asked)
only where the map would still be large enough for every max-pool and the head after it;
elsewhere it is padded. :meth:`SearchSpace.from_file` refuses files that break the family.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from nas.arch import (ArchSpec, Candidate, Layer, Recipe, bn, conv, dropout, dwconv, gap, leaky_relu, linear, maxpool,
                      relu)
from nas.space.roles import ARCH_ROLES, OPTIONAL_ROLES, RECIPE_ROLES, Entry, NoAliasLoader, parse_entry, values_of
from nas.system import check_nesting, read_text_file

# The space files shipped in the package: search_spaces/ at the top of the repository, installed as nas.space.spaces.
SPACES_DIR = Path(str(files("nas.space.spaces")))
DEFAULT_SPACE = "mnist_20k"

IN_SIZE = 28  # a file is checked against MNIST's size when it loads, and against the data's when a search opens
MAX_SPACE_BYTES = 200_000


class _Completing(optuna.trial.FixedTrial):
    """A FixedTrial that answers an optional role it was not given (one per network, or per position)
    with the role's default."""

    def suggest_categorical(self, name: str, choices: Any) -> Any:  # type: ignore[override]
        role = name if name in OPTIONAL_ROLES else {"sep": "separable"}.get(name.rsplit("_", 1)[-1])
        if name not in self._params and role in OPTIONAL_ROLES:
            self._params[name] = OPTIONAL_ROLES[role]
        return super().suggest_categorical(name, choices)


@dataclass(frozen=True)
class _Style:
    """The choices every layer of a sampled network shares: activation, order, dropout, biases, BatchNorm."""

    act: Layer
    bn_first: bool
    drop: Layer | None
    conv_bias: bool
    bn_affine: bool

    @classmethod
    def ask(cls, ask: Any) -> _Style:
        act = relu() if ask("activation") == "relu" else leaky_relu(ask("leaky_slope"))
        bn_first = ask("order") == "bn_relu"
        kind = ask("dropout")
        drop = None if kind == "none" else dropout(ask("dropout_rate"), channels=kind == "dropout2d")
        return cls(act, bn_first, drop, ask("conv_bias"), ask("bn_affine"))

    def unit(self, convs: list[Layer], with_act: bool, with_bn: bool, with_drop: bool) -> list[Layer]:
        norm = [bn(self.bn_affine)] if with_bn else []
        a = [self.act] if with_act else []
        return [*convs, *(norm + a if self.bn_first else a + norm), *([self.drop] if with_drop else [])]



@dataclass(frozen=True)
class _Transitions:
    """What every transition (a max-pool and a 1x1 conv) of a sampled network shares."""

    order: str
    act: bool
    bn: bool
    bias: bool
    pool_bn: bool
    drop: bool
    pool_drop: bool

    @classmethod
    def ask(cls, ask: Any, style: _Style) -> _Transitions:
        order, act, with_bn, bias, pool_bn = (ask(r) for r in (
            "transition_order", "transition_act", "transition_bn", "transition_bias", "pool_bn"))
        drop = style.drop is not None and ask("transition_dropout")
        return cls(order, act, with_bn, bias, pool_bn, drop, style.drop is not None and ask("pool_dropout"))

    def layers(self, ask: Any, style: _Style, i: int) -> list[Layer]:
        """Transition ``i``; its 1x1 conv's width is its own."""
        pool = [maxpool(), *([bn(style.bn_affine)] if self.pool_bn else []), *([style.drop] if self.pool_drop else [])]
        one_by_one = style.unit([conv(ask("transition_channels", f"t{i}_ch"), 1, 0, self.bias)], self.act, self.bn,
                                self.drop)
        return pool + one_by_one if self.order == "pool_conv" else one_by_one + pool


def _narrowed(entry: Entry, drop: Any) -> Entry | None:
    """``entry`` without the values ``drop`` picks (None: without its largest), a single value left fixed;
    None where nothing would be left."""
    if isinstance(entry, IntDistribution):
        high = entry.high - entry.step
        return None if high < entry.low else (entry.low if high == entry.low else
                                               IntDistribution(entry.low, high, log=entry.log, step=entry.step))
    values = values_of(entry)
    kept = [v for v in values if not drop(v)] if drop else sorted(values)[:-1]
    if not kept or len(kept) == len(values):
        return None
    return kept[0] if len(kept) == 1 else CategoricalDistribution(kept)


def _shown(entry: Entry) -> str:
    if isinstance(entry, IntDistribution):
        return f"{entry.low}-{entry.high}"
    values = values_of(entry)
    return str(values[0]).lower() if len(values) == 1 else "/".join(map(str, values))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    arch: dict[str, Entry]
    recipe: dict[str, Entry]
    references: dict[str, dict[str, Any]]
    digest: str  # identifies the distributions (not comments or references)
    path: str = ""
    text: str = ""  # the file as written; a study stores it, so it needs no file to resume

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        text = read_text_file(Path(path), MAX_SPACE_BYTES, "search space", "YAML")
        try:
            return cls.from_text(text, path=str(path))
        except ValueError as e:
            raise ValueError(f"search space {path}: {e}") from None

    @classmethod
    def from_text(cls, text: str, path: str = "", name: str = "") -> SearchSpace:
        check_nesting(text, "the space")
        try:
            data = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader without aliases
        except RecursionError:
            raise ValueError("not a space: the YAML is nested too deeply") from None
        except yaml.YAMLError as e:
            raise ValueError(f"not valid YAML: {str(e).splitlines()[0]}") from None
        if isinstance(data, dict) and name and not data.get("name"):
            data = {**data, "name": name}
        space = cls.from_dict(data, path=path)
        return replace(space, text=text)

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> SearchSpace:
        if not isinstance(data, dict) or not {"arch", "recipe"} <= set(data):
            raise ValueError("needs top-level keys 'arch' and 'recipe' (and optionally 'name', 'references')")
        unknown = set(data) - {"name", "arch", "recipe", "references"}
        if unknown:
            raise ValueError(f"unknown top-level key {sorted(unknown)[0]!r}")
        sections = {}
        for section, roles in (("arch", ARCH_ROLES), ("recipe", RECIPE_ROLES)):
            raw = data[section]
            if not isinstance(raw, dict):
                raise ValueError(f"'{section}' must be a mapping of role: distribution")
            unknown = set(raw) - set(roles)
            raw = {**{r: v for r, v in OPTIONAL_ROLES.items() if r in roles}, **raw}
            missing = set(roles) - set(raw)
            if unknown:
                raise ValueError(f"{section}: unknown role {sorted(unknown)[0]!r}; known: {', '.join(roles)}")
            if missing:
                raise ValueError(f"{section}: missing role {sorted(missing)[0]!r} ({roles[sorted(missing)[0]]})")
            sections[section] = {role: parse_entry(role, raw[role]) for role in roles}
        references = data.get("references") or {}
        if not isinstance(references, dict) or not all(isinstance(v, dict) for v in references.values()):
            raise ValueError("'references' must map a preset name to its parameter assignment")
        canonical = json.dumps({"arch": data["arch"], "recipe": data["recipe"]}, sort_keys=True, default=str)
        space = cls(str(data.get("name") or Path(path).stem or "space"), sections["arch"], sections["recipe"],
                    references, hashlib.sha1(canonical.encode()).hexdigest()[:12], path)
        space._check_family()
        return space

    def _check_family(self) -> None:
        """Refuse spaces whose family could produce an unbuildable network."""
        for role in ("stages", "convs", "channels", "transition_channels"):
            if min(values_of(self.arch[role])) < 1:
                raise ValueError(f"{role} must be at least 1")
        self.check_size(IN_SIZE)

    def _deepest(self) -> tuple[int, int]:
        """The most max-pools a network of the family has, and the map size its head needs after them."""
        a = self.arch
        max_pools = max(values_of(a["stages"])) - 1 + int(True in values_of(a["head_pool"]))
        return max_pools, 3 if "conv3x3_gap" in values_of(a["head"]) else 1

    def check_size(self, size: int) -> None:
        """Every network of the family fits a ``size`` x ``size`` image (its max-pools and head)."""
        max_pools, head_need = self._deepest()
        if size < head_need * 2**max_pools:
            where = f" ({self.path})" if self.path else ""
            raise ValueError(f"search space {self.name}{where}: up to {max_pools} max-pools"
                             f"{' and a 3x3 head' if head_need == 3 else ''} do not fit a {size}x{size} image; "
                             "allow fewer stages")

    def fitted_to(self, size: int) -> tuple[SearchSpace, list[str]]:
        """The space cut to what fits a ``size`` x ``size`` image, and what was cut: first the max-pool
        before the head, then the most stages, one at a time, then the 3x3-conv head, until every network
        of the family fits. A space that cannot fit even so is refused (``check_size``)."""
        space, cuts = self, []
        for role, drop in (("head_pool", lambda v: v is True), ("stages", None), ("head", lambda v: v == "conv3x3_gap")):
            while size < (need := space._deepest())[1] * 2 ** need[0]:
                entry = _narrowed(space.arch[role], drop)
                if entry is None:
                    break
                space = replace(space, arch={**space.arch, role: entry})
                cuts.append(f"{role} {_shown(entry)}")
        space.check_size(size)
        return space, cuts

    def sample(self, trial: optuna.trial.BaseTrial, shape: tuple[int, int, int] = (1, 28, 10)) -> Candidate:
        """Sample one candidate (architecture and recipe) by asking ``trial`` for each choice."""
        return Candidate(self._sample_arch(trial, shape), self._sample_recipe(trial))

    def _ask(self, trial: optuna.trial.BaseTrial, section: dict[str, Entry], role: str, name: str | None = None) -> Any:
        entry = section[role]
        name = name or role
        if isinstance(entry, CategoricalDistribution):
            return trial.suggest_categorical(name, entry.choices)
        if isinstance(entry, IntDistribution):
            return trial.suggest_int(name, entry.low, entry.high, step=entry.step, log=entry.log)
        if isinstance(entry, FloatDistribution):
            return trial.suggest_float(name, entry.low, entry.high, step=entry.step, log=entry.log)
        return entry

    def _sample_arch(self, trial: optuna.trial.BaseTrial, shape: tuple[int, int, int]) -> ArchSpec:
        def ask(role: str, name: str | None = None) -> Any:
            return self._ask(trial, self.arch, role, name)

        channels, size, classes = shape
        style = _Style.ask(ask)
        n_stages, head, head_pool = ask("stages"), ask("head"), ask("head_pool")
        transitions = _Transitions.ask(ask, style) if n_stages > 1 else None
        layers: list[Layer] = []
        for i in range(1, n_stages + 1):
            # Size this block must keep so every later max-pool and the head still fit.
            need = (3 if head == "conv3x3_gap" else 1) * 2 ** ((n_stages - i) + int(head_pool))
            block, size = self._block(ask, style, i, size, need, first=not layers)
            layers += block
            if transitions is not None and i < n_stages:
                layers += transitions.layers(ask, style, i)
                size //= 2
        uses = ask("shared")
        if uses:  # depth at the cost of one conv: its weights shared by every use (docs/method.md)
            layers.append(Layer("shared", times=uses, k=3, sep=True, bias=style.conv_bias, affine=style.bn_affine))
        if head_pool:
            layers.append(maxpool())
        head_bias = ask("head_bias")
        layers += {
            "gap_linear": lambda: [gap(), linear(classes, head_bias)],
            "gap_conv1x1": lambda: [gap(), conv(classes, 1, 0, head_bias)],
            "conv1x1_gap": lambda: [conv(classes, 1, 0, head_bias), gap()],
            "conv3x3_gap": lambda: [conv(classes, 3, 0, head_bias), gap()],
        }[head]()
        return ArchSpec(tuple(layers), channels, shape[1], classes)

    @staticmethod
    def _block(ask: Any, style: _Style, i: int, size: int, need: int, first: bool) -> tuple[list[Layer], int]:
        """Block ``i``: its 3x3 convs (each plain or depthwise-separable), unpadded only where ``need`` still fits."""
        layers: list[Layer] = []
        for j in range(1, ask("convs", f"s{i}_convs") + 1):
            p = f"s{i}_c{j}_"
            out = ask("channels", p + "ch")
            pad = ask("padding", p + "pad") if size - 2 >= need else 1
            size -= 2 * (1 - pad)
            with_bn = ask("batchnorm", p + "bn")
            with_drop = style.drop is not None and ask("conv_dropout", p + "drop")
            # A separable conv needs channels to be depthwise over: never the network's first conv.
            if not (first and j == 1) and ask("separable", p + "sep"):
                convs = [dwconv(3, pad, False), conv(out, 1, 0, style.conv_bias)]
            else:
                convs = [conv(out, 3, pad, style.conv_bias)]
            layers += style.unit(convs, True, with_bn, with_drop)
        return layers, size

    def _sample_recipe(self, trial: optuna.trial.BaseTrial) -> Recipe:
        def ask(role: str) -> Any:
            return self._ask(trial, self.recipe, role)

        optimizer = ask("optimizer")
        fields: dict[str, Any] = {"optimizer": optimizer}
        if optimizer == "sgd":
            fields.update(lr=ask("lr_sgd"), momentum=ask("momentum"), nesterov=ask("nesterov"))
        else:
            fields.update(lr=ask("lr_adam"))
        fields.update(weight_decay=ask("weight_decay"), batch_size=ask("batch_size"), schedule=ask("schedule"))
        if fields["schedule"] == "step":
            fields.update(step_size=ask("step_size"), gamma=ask("gamma"))
        elif fields["schedule"] == "multistep":
            fields.update(milestones=(ask("milestone_1"), ask("milestone_2")), gamma=ask("gamma"))
        fields.update(rotation=float(ask("rotation")), translate=float(ask("translate")), scale=float(ask("scale")),
                      crop=float(ask("crop")), init=ask("init"), label_smoothing=float(ask("label_smoothing")),
                      epochs=ask("epochs"))
        return Recipe(**fields)

    def reference(self, name: str) -> Candidate:
        """The candidate the space's parameter assignment for reference ``name`` builds."""
        return replace(self.sample(optuna.trial.FixedTrial(self.reference_params(name))), name=name)

    def reference_params(self, name: str) -> dict[str, Any]:
        """Reference ``name``'s whole assignment: as the file gives it, with each optional role it
        leaves out (asked per position, like ``s1_c2_sep``) at its default, so a queued reference
        trial never samples one."""
        if name not in self.references:
            raise ValueError(f"search space {self.name} has no reference {name!r}")
        trial = _Completing(self.references[name])
        self.sample(trial)
        return trial.params


def space_file(name_or_path: str | Path | None = None) -> Path:
    """The file of a space: a path as given, or the name of a space shipped in the package
    (``mnist_20k``, the default); copy a shipped file to edit it."""
    if name_or_path is None:
        name_or_path = DEFAULT_SPACE
    path = Path(name_or_path)
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if not path.exists() and path.suffix == "" and shipped.exists():
        return shipped
    return path


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
