"""Recipes as data: a named, frozen description of one self-supervised model.

A recipe says *what* to build (method + backbone), *on what* (dataset, image
size, augmentation), *how long and how fast* (training defaults) and *where its
weights live* (Hub repo, file, checksum, license, paper). Factories in
``ssl_zoo.factory`` turn recipes into modules; the registry here finds them.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .registry import Registry, UnknownNameError, did_you_mean

# augment_preset -> the augmentations the training views keep ("crop" = RandomResizedCrop; without it a
# "crop" view is the whole image resized). The ablation presets of LeOCLR's Fig. 4 and the usual extras.
AUGMENT_PRESETS: dict[str, frozenset[str]] = {
    "full": frozenset({"crop", "color", "grayscale", "blur", "flip"}),
    "crop_only": frozenset({"crop"}),
    "crop_flip": frozenset({"crop", "flip"}),
    "no_color": frozenset({"crop", "grayscale", "blur", "flip"}),
    "no_grayscale": frozenset({"crop", "color", "blur", "flip"}),
    "no_blur": frozenset({"crop", "color", "grayscale", "flip"}),
    "no_flip": frozenset({"crop", "color", "grayscale", "blur"}),
    "no_crop": frozenset({"color", "grayscale", "blur", "flip"}),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _require(ok: bool, message: str) -> None:
    """Recipe fields are checked where they are defined, so every override is checked too."""
    if not ok:
        from .errors import UserInputError  # local: recipe.py stays importable on its own

        raise UserInputError(f"{message}.")


def _canonical(value: Any) -> Any:
    """Lists become tuples (recursively) so a recipe compares equal to its JSON round trip."""
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    return value


@dataclass(frozen=True)
class BackboneCfg:
    """Any timm architecture and the keyword arguments timm builds it with."""

    arch: str = "resnet50"
    model_args: Mapping[str, Any] = field(default_factory=dict)
    # Encoder initialisation before SSL training: None (random), "timm:<name.tag>"
    # (timm pretrained weights, needs the Hub or a cache), or a path to a checkpoint.
    init: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_args", _canonical(dict(self.model_args)))


@dataclass(frozen=True)
class AugmentCfg:
    """Image size and the MoCo v2 augmentation parameters (METHODS.md)."""

    image_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip_p: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # Evaluation view: Resize(image_size / eval_crop_pct) + CenterCrop(image_size). 0.875 is the
    # ImageNet protocol (256 -> 224); 1.0 evaluates the whole image (the CIFAR protocol).
    eval_crop_pct: float = 0.875
    # Resampling of the evaluation view (and the exported pretrained_cfg's "interpolation", which timm's eval
    # transform reads); None: ``interpolation``. LeOCLR's centre-crop test resizes with bicubic (its Sec. 5).
    eval_interpolation: str | None = None
    # Which of the augmentations above the training views apply (LeOCLR Fig. 4 removes them one by one):
    # one of AUGMENT_PRESETS. "full" is the recipe's augmentation as written above.
    augment_preset: str = "full"

    def __post_init__(self) -> None:
        _require(self.augment_preset in AUGMENT_PRESETS,
                 f"augment_preset {self.augment_preset!r} is not one of {', '.join(AUGMENT_PRESETS)}")
        _require(isinstance(self.image_size, int) and self.image_size >= 8,
                 f"image_size must be an integer >= 8, got {self.image_size!r}")
        lo, hi = self.crop_scale
        _require(0 < lo <= hi <= 1, f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale!r}")
        for name in ("color_jitter_p", "grayscale_p", "blur_p", "hflip_p"):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"{name} is a probability in [0, 1], got {value!r}")
        _require(0 < self.eval_crop_pct <= 1, f"eval_crop_pct must be in (0, 1], got {self.eval_crop_pct!r}")
        _require(self.eval_interpolation in (None, "bilinear", "bicubic", "nearest"),
                 f"eval_interpolation must be None, 'bilinear', 'bicubic' or 'nearest': {self.eval_interpolation!r}")


@dataclass(frozen=True)
class TrainCfg:
    """Training defaults; the learning rate is ``base_lr * batch_size / lr_batch_denom``.

    ``batch_size`` is the GLOBAL batch, as papers and official scripts give it: each process
    gets ``batch_size / (processes x grad_accum)`` images per micro-step, so a recipe is the same
    experiment on 1, 2 or 8 processes.
    """

    epochs: int = 200
    batch_size: int = 256
    base_lr: float = 0.03
    lr_batch_denom: int = 256
    optimizer: str = "sgd"
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    num_workers: int = 2
    # Official MoCo / SimSiam decay every parameter; False exempts norm weights and biases (ndim <= 1).
    decay_norm_and_bias: bool = True
    # One BatchNorm group over every process (official SimSiam converts its model to SyncBatchNorm).
    sync_bn: bool = False
    # A process batch smaller than the BatchNorm group (bn_group_size, or SyncBN's global batch) shrinks the
    # groups: False warns once and records the effective size in config.json, True refuses to run.
    strict_bn_groups: bool = False

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs!r} (0 would export an untrained encoder)")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size!r}")
        _require(self.base_lr > 0, f"base_lr must be > 0, got {self.base_lr!r}")
        _require(self.lr_batch_denom >= 1, f"lr_batch_denom must be >= 1, got {self.lr_batch_denom!r}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _require(0 <= self.sgd_momentum < 1, f"sgd_momentum must be in [0, 1), got {self.sgd_momentum!r}")
        _require(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        _require(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr!r}")
        _require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers!r}")


@dataclass(frozen=True)
class WeightsCfg:
    """Where published weights live, in timm's priority order: file > Hub > URL.

    ``sha256`` is the checksum of the file the recipe loads: the Hub file when ``hf_hub_id`` is
    set, else the file at ``url`` (or ``file``). ``md5`` is the checksum of the file at ``url``,
    as upstream READMEs print it (a hex prefix of at least 8 digits is accepted). ``source`` names
    the ``ssl_zoo.convert`` layout of the file at ``url`` (``"moco"``, ``"simsiam"``, ...); without
    it the file must already be in ssl_zoo/timm format. ``classifier_url`` is an official linear
    classifier of ``classifier_classes`` classes trained on these (frozen) weights, in the layout of
    MoCo's / SimSiam's ``main_lincls.py``; ``create_model(..., num_classes=classifier_classes)``
    loads it.
    """

    hf_hub_id: str | None = None
    filename: str = "model.safetensors"
    revision: str | None = None
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    md5: str | None = None
    source: str | None = None
    classifier_url: str | None = None
    classifier_classes: int | None = None
    license: str = "apache-2.0"
    paper: str = ""

    def __post_init__(self) -> None:
        if bool(self.classifier_url) != bool(self.classifier_classes):
            raise ValueError("WeightsCfg: classifier_url and classifier_classes go together (the classifier's "
                             "file and its number of classes); set both or neither.")
        if self.md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,32}", self.md5):
            raise ValueError(f"WeightsCfg.md5 {self.md5!r} is not an md5 hex digest or a prefix of at least 8 "
                             f"hex digits.")

    @property
    def published(self) -> bool:
        return bool(self.hf_hub_id or self.url or self.file)


EVAL_PROTOCOLS = ("linear", "retrieval", "knn")


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol of a recipe's paper pipeline (``ssl-zoo reproduce``).

    ``protocol`` is an ``ssl-zoo eval`` protocol. ``label_fraction`` and ``epochs`` apply to the
    linear probe (the share of each class's train images with labels; 100 epochs is the MoCo
    protocol), ``k`` to k-NN. ``options`` sets any other ``ssl-zoo eval`` option by its argument
    name (``{"lr": 30.0, "cached_features": True}``).
    """

    protocol: str
    label_fraction: float = 1.0
    epochs: int = 100
    k: tuple[int, ...] = (20, 200)
    train_split: str = "train"
    test_split: str = "test"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in EVAL_PROTOCOLS:
            raise ValueError(f"EvalProtocol: unknown protocol {self.protocol!r}; use one of "
                             f"{', '.join(EVAL_PROTOCOLS)}.")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"EvalProtocol: label_fraction must be in (0, 1], got {self.label_fraction}.")
        if self.label_fraction < 1.0 and self.protocol != "linear":
            raise ValueError("EvalProtocol: label_fraction applies to the linear probe only.")
        object.__setattr__(self, "k", tuple(self.k))
        object.__setattr__(self, "options", _canonical(dict(self.options)))

    @property
    def key(self) -> str:
        """A stable name: ``linear_100``, ``linear_20``, ``retrieval``, ``knn``."""
        if self.protocol == "linear":
            return f"linear_{round(100 * self.label_fraction):d}"
        return self.protocol


@dataclass(frozen=True)
class PaperResult:
    """A number the paper reports for this recipe, in percent, with the table it comes from.

    ``protocol`` is an ``EvalProtocol.key`` of the recipe; ``metric`` is the name ``ssl-zoo eval``
    writes (``top1``, ``rank1``, ``rank5``, ``mAP``, ``top1_k20``).
    """

    protocol: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class Recipe:
    """A named, frozen description of one self-supervised model (module docstring)."""

    name: str
    method: str
    method_args: Mapping[str, Any] = field(default_factory=dict)
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    dataset: str = "imagenet1k"
    # The split self-supervised training reads (STL-10 pre-trains on "train+unlabeled").
    train_split: str = "train"
    train: TrainCfg = field(default_factory=TrainCfg)
    weights: WeightsCfg = field(default_factory=WeightsCfg)
    description: str = ""
    # The paper's evaluation protocols for this recipe's dataset and the numbers it reports
    # (``ssl-zoo reproduce`` runs the first and puts the second beside its own results).
    evaluation: tuple[EvalProtocol, ...] = ()
    paper_results: tuple[PaperResult, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_args", _canonical(dict(self.method_args)))
        object.__setattr__(self, "evaluation", tuple(self.evaluation))
        object.__setattr__(self, "paper_results", tuple(self.paper_results))
        keys = [p.key for p in self.evaluation]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Recipe {self.name!r} declares an evaluation protocol twice: {keys}.")
        for r in self.paper_results:
            if r.protocol not in keys:
                raise ValueError(f"Recipe {self.name!r}: paper result {r.protocol}/{r.metric} ({r.source}) names no "
                                 f"declared evaluation protocol; declared: {', '.join(keys) or 'none'}.")

    # -- derived views ------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.augment.image_size

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm-style pretrained_cfg for the encoder this recipe produces."""
        size = self.augment.image_size
        return {
            "architecture": self.backbone.arch,
            "tag": self.name,
            "hf_hub_id": self.weights.hf_hub_id,
            "file": self.weights.file,
            "url": self.weights.url,
            "input_size": (3, size, size),
            "interpolation": self.augment.eval_interpolation or self.augment.interpolation,
            "crop_pct": self.augment.eval_crop_pct,
            "mean": tuple(self.augment.mean),
            "std": tuple(self.augment.std),
            "num_classes": 0,
            "license": self.weights.license,
            "paper": self.weights.paper,
        }

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        sections = {"backbone": BackboneCfg, "augment": AugmentCfg, "train": TrainCfg, "weights": WeightsCfg}
        kwargs = dict(data)
        for key, sec_cls in sections.items():
            if key in kwargs and isinstance(kwargs[key], Mapping):
                kwargs[key] = _build(sec_cls, kwargs[key])
        for key, item_cls in (("evaluation", EvalProtocol), ("paper_results", PaperResult)):
            if key in kwargs:
                kwargs[key] = tuple(_build(item_cls, v) if isinstance(v, Mapping) else v for v in kwargs[key])
        return _build(cls, kwargs)

    def with_overrides(self, **overrides: Any) -> Recipe:
        """Return a copy with fields replaced.

        Keys may be a top-level field (``dataset``), a section given as a dict
        (``train={"epochs": 5}``), a field of a section (``epochs``, ``arch``,
        ``image_size``) or a method argument (``queue_size``). Unknown keys and
        wrong types raise ``ValueError`` naming the key and close matches.
        """
        if not overrides:
            return self
        top: dict[str, Any] = {}
        per_section: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
        method_args = dict(self.method_args)
        for key, value in overrides.items():
            if key in _SECTIONS and isinstance(value, Mapping):
                for sub_key, sub_value in value.items():
                    _check_field(_SECTIONS[key], sub_key, sub_value, where=key)
                    per_section[key][sub_key] = sub_value
            elif key == "method_args" and isinstance(value, Mapping):
                for sub_key, sub_value in value.items():
                    method_args[sub_key] = _checked_method_arg(self, sub_key, sub_value)
            elif key in _SECTIONS or key == "method_args":
                raise section_override_error(key, value)
            elif key in _TOP_FIELDS:
                _check_field(Recipe, key, value, where="recipe")
                top[key] = value
            elif key in _SECTION_FIELD_OWNER and key in _method_params(self.method):
                raise ValueError(f"Override {key!r} is ambiguous: it is both a method argument and a "
                                 f"{_SECTION_FIELD_OWNER[key]} field. Pass method_args={{{key!r}: ...}} or "
                                 f"{_SECTION_FIELD_OWNER[key]}={{{key!r}: ...}}.")
            elif key in _SECTION_FIELD_OWNER:
                section = _SECTION_FIELD_OWNER[key]
                _check_field(_SECTIONS[section], key, value, where=section)
                per_section[section][key] = value
            elif key in method_args or key in _method_params(self.method):
                method_args[key] = _checked_method_arg(self, key, value)
            else:
                known = sorted(set(_TOP_FIELDS) | set(_SECTION_FIELD_OWNER) | set(method_args)
                               | set(_method_params(self.method)))
                raise ValueError(f"Unknown override {key!r} for recipe {self.name!r}.{did_you_mean(key, known)} "
                                 f"Valid keys: {', '.join(known)}.")
        replaced = {s: dataclasses.replace(getattr(self, s), **kw) for s, kw in per_section.items() if kw}
        return dataclasses.replace(self, method_args=method_args, **top, **replaced)


_SECTIONS: dict[str, type] = {"backbone": BackboneCfg, "augment": AugmentCfg, "train": TrainCfg, "weights": WeightsCfg}
_TOP_FIELDS = {"name", "method", "dataset", "train_split", "description"}
_SECTION_FIELD_OWNER: dict[str, str] = {}
for _section, _cls in _SECTIONS.items():
    for _f in dataclasses.fields(_cls):
        # "file"/"url" belong to weights; names repeated across sections must be given as dicts.
        if _f.name in _SECTION_FIELD_OWNER:
            raise AssertionError(f"ambiguous recipe field {_f.name}")
        _SECTION_FIELD_OWNER[_f.name] = _section


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s) {sorted(unknown)}; valid: {sorted(names)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list) and _is_tuple_type(hints[key]):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _is_tuple_type(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _type_ok(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(args[0], v) for v in value)
        return len(args) == len(value) and all(_type_ok(a, v) for a, v in zip(args, value))
    if origin is not None:
        tp = origin
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (Mapping, typing.Mapping) or (isinstance(tp, type) and issubclass(tp, Mapping)):
        return isinstance(value, Mapping)
    return isinstance(value, tp) if isinstance(tp, type) else True


def section_override_error(key: str, value: Any) -> TypeError:
    """``--set train=5``: a section (or ``method_args``) replaced by something that is not a dict."""
    fields = ([f.name for f in dataclasses.fields(_SECTIONS[key])] if key in _SECTIONS else ["NAME"])[:1]
    return TypeError(f"Override {key!r}={value!r} has type {type(value).__name__}; {key} expects a dict of its "
                     f"fields, e.g. --set \"{key}={{'{fields[0]}': ...}}\", or set one field alone "
                     f"(--set {fields[0]}=...).")


def _check_field(cls: type, key: str, value: Any, where: str) -> None:
    hints = typing.get_type_hints(cls)
    if key not in hints:
        raise ValueError(f"Unknown {where} field {key!r}.{did_you_mean(key, list(hints))}")
    if not _type_ok(hints[key], value):
        raise TypeError(f"Override {key!r}={value!r} has type {type(value).__name__}; "
                        f"{where}.{key} expects {_type_name(hints[key])}.")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _method_params(method: str) -> dict[str, Any]:
    """Keyword parameters (name -> default) of a registered method's constructor."""
    from .methods import method_parameters

    try:
        return method_parameters(method)
    except KeyError:
        return {}


def _checked_method_arg(recipe: Recipe, key: str, value: Any) -> Any:
    value = _canonical(value)  # a list from JSON / the command line is the same as a tuple
    params = _method_params(recipe.method)
    if params and key not in params:
        raise ValueError(f"Method {recipe.method!r} has no argument {key!r}.{did_you_mean(key, list(params))} "
                         f"Valid: {', '.join(sorted(params))}.")
    current = recipe.method_args.get(key, params.get(key))
    if current is not None and value is not None:
        if isinstance(current, bool) != isinstance(value, bool) or (
                not isinstance(value, type(current)) and not (isinstance(current, float) and isinstance(value, int))):
            raise TypeError(f"Method argument {key!r}={value!r} has type {type(value).__name__}; "
                            f"expected {type(current).__name__} (default {current!r}).")
    return value


# -- the registry -----------------------------------------------------------


def _ensure_loaded() -> None:
    from . import recipes  # noqa: F401  (registers the built-in recipes on import)


class UnknownRecipeError(UnknownNameError):
    """A recipe name that is not registered (the message suggests close names)."""


_RECIPES: Registry[Recipe] = Registry(
    "recipe", error=UnknownRecipeError, on_first_use=_ensure_loaded,
    epilogue=lambda reg: f"`ssl_zoo.list_models()` or `ssl-zoo list` shows all {len(reg)} recipes.")


def register_recipe(recipe: Recipe, *, overwrite: bool = False) -> Recipe:
    """Add a recipe to the registry (one call; returns it). Names must be unique."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register_recipe expects a Recipe, got {type(recipe).__name__}.")
    return _RECIPES.register(recipe.name, recipe, overwrite=overwrite)


def get_recipe(name: str) -> Recipe:
    """The registered recipe called ``name``; unknown names suggest close matches."""
    return _RECIPES.get(name)


def list_models(filter: str | Iterable[str] = "*", pretrained: bool = False,
                predicate: Callable[[Recipe], bool] | None = None) -> list[str]:
    """Sorted recipe names matching an fnmatch pattern (or any of several)."""
    names = []
    for name in _RECIPES.list(filter):
        recipe = _RECIPES.get(name)
        if pretrained and not recipe.weights.published:
            continue
        if predicate is not None and not predicate(recipe):
            continue
        names.append(name)
    return sorted(names)


def list_pretrained(filter: str = "*") -> list[str]:
    """Recipes whose weights are published (Hub repo, URL or file)."""
    return list_models(filter, pretrained=True)
