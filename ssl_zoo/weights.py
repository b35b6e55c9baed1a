"""Pretrained weights: one loading path from any model source to a built, strictly loaded timm encoder.

As timm's ``create_model`` does, :func:`resolve_source` turns a source into a :class:`ModelSource`
(architecture, model arguments, pretrained_cfg, the state-dict file) and :func:`build_model` creates
the encoder and loads it. Sources: a recipe (name or ``Recipe``; its weights in timm's priority,
``resolve_weights``: explicit checkpoint > ``weights.file`` > ``weights.hf_hub_id`` > ``weights.url``,
a URL file converted with ``ssl_zoo.convert``), ``hf-hub:org/repo[@rev]``, ``local-dir:FOLDER``, an
exported model / run folder, or a training checkpoint (``checkpoint.pt``, which records its recipe).

Weights are read by one reader (:func:`read_state_dict`: safetensors; ``torch.load(weights_only=True)``
for PyTorch pickles), cut by one filter (:func:`filter_state_dict`: key prefix, classifier heads) and
always end in a strict load (:func:`load_state_dict_strict`): weights for another architecture fail
with the missing / unexpected / shape-mismatched keys listed. Files are fetched and verified by
``ssl_zoo.download`` (which knows nothing about models); a URL file in an upstream layout is converted
once by ``ssl_zoo.convert`` (:func:`url_weights`). Imports run download <- state_dicts <- convert <- weights
<- hub (publishing) and model_card.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .convert import FILTERS, ConversionError, convert_checkpoint, split_linear_classifier
from .download import (  # noqa: F401  (re-exported: the download family of errors and digests)
    ChecksumMismatchError,
    CorruptWeightsError,
    WeightsError,
    WeightsNotFoundError,
    WeightsOfflineError,
    file_digests,
    hub_download,
    sha256_file,
    url_cache_folder,
    url_download,
    verify_checksums,
    verify_sha256,
)
from .errors import UserInputError
from .export import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    describe_non_finite,
    non_finite_tensors,
    read_encoder_config,
    validate_model_args,
)
from .recipe import Recipe, WeightsCfg
from .state_dicts import (  # noqa: F401  (re-exported: the one reader and filter)
    classifier_names,
    filter_state_dict,
    head_prefixes,
    read_checkpoint,
    read_state_dict,
    state_dict_of,
    state_dict_sha256,
)

_logger = logging.getLogger(__name__)

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
CLASSIFIER_NAME = "classifier.safetensors"
# Where a training checkpoint (or a full-method state dict) keeps the encoder; tried in this order
# when the weights do not sit at the top level.
ENCODER_PREFIXES = ("encoder.", "backbone.", "model.", "module.", "module.encoder_q.", "module.encoder.", "encoder_q.")


# -- errors (the download family is ssl_zoo.download's) -------------------------

class WeightsNotPublishedError(WeightsError):
    """The recipe has no weight location (no file, Hub repo or URL)."""


class EvalResultError(WeightsError):
    """An evaluation result that cannot be published as this model's score (random init, other weights)."""


class ArchitectureMismatchError(WeightsError):
    """The weights belong to another architecture: missing / unexpected / shape-mismatched keys."""


# -- small pure helpers ---------------------------------------------------------

def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """``"org/repo@rev"`` -> ``("org/repo", "rev")``; the revision is optional."""
    repo_id, _, revision = spec.partition("@")
    if not _REPO_ID_RE.match(repo_id):
        raise ValueError(f"Invalid Hub repo {spec!r}: expected 'org/name' or 'org/name@revision' "
                         f"(e.g. 'hf-hub:ssl-zoo/moco_v2_r50_in1k@main').")
    return repo_id, (revision or None)


def find_model_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``model.safetensors`` + ``config.json``: ``path`` itself or one subfolder."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsNotFoundError(f"{root} is not a folder. Pass a run or model folder holding "
                                   f"{WEIGHTS_NAME} and {CONFIG_NAME}.")
    if (root / WEIGHTS_NAME).is_file():
        return root
    found = sorted(p.parent for p in root.glob(f"*/{WEIGHTS_NAME}"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise WeightsError(f"{root} holds several exported encoders ({', '.join(str(p) for p in found)}); "
                           f"pass the one you mean.")
    raise WeightsNotFoundError(f"No {WEIGHTS_NAME} in {root} or its subfolders. Export the encoder first "
                               f"(training does it at the end; see ssl_zoo.export.save_encoder), or import "
                               f"an upstream checkpoint with `ssl-zoo convert`.")


# -- strict loading ----------------------------------------------------------

def _encoder_prefix(state: Mapping[str, torch.Tensor], expected: list[str]) -> str | None:
    """The key prefix under which ``state`` holds every ``expected`` key (``encoder.`` in a training
    checkpoint, ``module.encoder_q.`` upstream); None when the keys sit at the top level or no one
    prefix covers them."""
    if not expected or any(k in state for k in expected):
        return None
    anchor = expected[0]
    prefixes = sorted({k[: -len(anchor)] for k in state if k.endswith(anchor)})
    covering = [p for p in prefixes if all(p + k in state for k in expected)]
    preferred = [p for p in ENCODER_PREFIXES if p in covering]
    covering = preferred[:1] or covering
    return covering[0] if len(covering) == 1 else None


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights",
                           prefix: str | None = None) -> None:
    """Load ``state`` into ``model``; only a freshly created classifier head may stay unfilled.

    ``prefix`` selects the keys under it (``"decoder."``); without one, the weights are found under a
    prefix that covers the model (``encoder.`` in a training checkpoint) or at the top level.
    Raises ``ArchitectureMismatchError`` listing missing, unexpected and shape-mismatched keys.
    Warns (``RuntimeWarning``) when tensors hold NaN/inf: the weights load, but they come from a diverged run.
    """
    heads = head_prefixes(model)
    own = model.state_dict()
    expected = [k for k in filter_state_dict(own, drop=heads)]
    prefix = prefix if prefix is not None else _encoder_prefix(state, expected)
    # a new head is never loaded
    state = filter_state_dict(state, prefixes=(prefix,) if prefix else (), drop=heads)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in expected if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "") if keys else "none"
        raise ArchitectureMismatchError(
            f"The weights from {source} do not fit {arch}: {len(missing)} missing keys ({show(missing)}); "
            f"{len(unexpected)} unexpected keys ({show(unexpected)}); {len(mismatched)} shape mismatches "
            f"({show(mismatched)}). They were made for another architecture or key layout: check the "
            f"recipe's backbone, or import upstream checkpoints with `ssl-zoo convert`.")
    bad = non_finite_tensors(state)
    if bad:
        warnings.warn(f"The weights from {source} have {describe_non_finite(bad)} holding NaN/inf: they come from "
                      f"a diverged run and the model's outputs will be NaN. Use weights from an earlier checkpoint.",
                      RuntimeWarning, stacklevel=2)
    model.load_state_dict(state, strict=False)


# -- the one loading path: source -> ModelSource -> built, loaded encoder -------------

@dataclasses.dataclass(frozen=True)
class ModelSource:
    """What to build and what to load into it: a resolved model source (timm's (cfg, arch, args))."""

    name: str                                   # the source as given, for messages and reports
    architecture: str
    model_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pretrained_cfg: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    weights: Path | None = None                 # the state-dict file; None: no weights to load
    origin: str = ""                            # where the weights came from ("hf-hub:org/repo@rev/...")
    recipe: Recipe | None = None                # the recipe the source names or records
    config: Mapping[str, Any] | None = None     # config.json of an exported folder or Hub repo
    init: str | None = None                     # the recipe's encoder init, used when there are no weights
    classifier: bool = False                    # also load the recipe's official linear classifier (if it fits)


def _local_path(spec: str | os.PathLike) -> Path | None:
    """The local path a spec names (``local-dir:FOLDER``, a path object, an existing path), else None."""
    if isinstance(spec, os.PathLike):
        return Path(spec)
    if spec.startswith("local-dir:"):
        return Path(spec[len("local-dir:"):]).expanduser()
    from .recipe import list_models

    path = Path(spec).expanduser()
    return path if spec not in list_models() and path.exists() else None


def resolve_source(spec: str | os.PathLike | Recipe, *, pretrained: bool = False,
                   checkpoint: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                   endpoint: str | None = None, token: str | bool | None = None,
                   cache_dir: str | os.PathLike | None = None) -> ModelSource:
    """Turn any model source into a :class:`ModelSource`, downloading and verifying what it needs.

    ``spec``: a ``Recipe`` or registered recipe name (``overrides`` are recipe fields; weights with
    ``pretrained`` or ``checkpoint``, else none), ``hf-hub:org/repo[@rev]`` (``overrides`` are extra
    ``timm.create_model`` arguments), ``local-dir:FOLDER`` or a path: an exported model / run folder
    or a training checkpoint. ``checkpoint`` (a file or folder) replaces the source's own weights.
    """
    overrides = dict(overrides or {})
    if isinstance(spec, Recipe) or not (isinstance(spec, os.PathLike) or spec.startswith("hf-hub:")
                                        or _local_path(spec) is not None):
        from .recipe import get_recipe

        recipe = (spec if isinstance(spec, Recipe) else get_recipe(spec)).with_overrides(**overrides)
        return recipe_source(recipe, pretrained=pretrained, checkpoint=checkpoint, endpoint=endpoint, token=token,
                             cache_dir=cache_dir)
    if isinstance(spec, str) and spec.startswith("hf-hub:"):
        source = _hub_source(spec[len("hf-hub:"):], pretrained and checkpoint is None, endpoint, token, cache_dir)
    else:
        path = _local_path(spec)
        assert path is not None  # the recipe branch above took every spec that names no local path
        source = local_source(path)
    source = dataclasses.replace(source, model_args={**source.model_args, **overrides})
    if checkpoint is not None:
        path = checkpoint_file(checkpoint)
        source = dataclasses.replace(source, weights=path, origin=f"checkpoint {path}")
    return source


def recipe_source(recipe: Recipe, *, pretrained: bool = False, checkpoint: str | os.PathLike | None = None,
                  endpoint: str | None = None, token: str | bool | None = None,
                  cache_dir: str | os.PathLike | None = None) -> ModelSource:
    """A recipe's encoder; its weights (``resolve_weights``) with ``pretrained`` or ``checkpoint``,
    else its ``backbone.init``."""
    weights, origin = None, ""
    if pretrained or checkpoint is not None:
        weights, origin = resolve_weights(recipe, checkpoint, endpoint=endpoint, token=token, cache_dir=cache_dir)
    w = recipe.weights
    return ModelSource(name=recipe.name, architecture=recipe.backbone.arch, model_args=dict(recipe.backbone.model_args),
                       pretrained_cfg=recipe.pretrained_cfg(), weights=weights, origin=origin, recipe=recipe,
                       init=None if weights else recipe.backbone.init,
                       classifier=bool(pretrained and checkpoint is None and w.classifier_url))


def _hub_source(repo_spec: str, load_weights: bool, endpoint: str | None, token: str | bool | None,
                cache_dir: str | os.PathLike | None) -> ModelSource:
    """The model a Hub repo's ``config.json`` describes, and (``load_weights``) its ``model.safetensors``."""
    repo_id, revision = parse_repo_spec(repo_spec)
    cfg_path = hub_download(repo_id, CONFIG_NAME, revision, endpoint=endpoint, token=token, cache_dir=cache_dir)
    config = read_encoder_config(cfg_path)
    weights = None
    if load_weights:
        # Pin the weights to the commit the config came from, so a concurrent push cannot mix them.
        commit = cfg_path.parent.name if _COMMIT_RE.match(cfg_path.parent.name) else revision
        weights = hub_download(repo_id, WEIGHTS_NAME, commit, endpoint=endpoint, token=token, cache_dir=cache_dir)
    return ModelSource(name=f"hf-hub:{repo_spec}", architecture=config["architecture"],
                       model_args=dict(config.get("model_args") or {}),
                       pretrained_cfg={**dict(config.get("pretrained_cfg") or {}), "hf_hub_id": repo_spec,
                                       "source": "hf-hub"},
                       weights=weights, origin=f"hf-hub:{repo_spec}", recipe=_stored_recipe(config), config=config)


def local_source(path: str | os.PathLike) -> ModelSource:
    """An exported model folder (or a run folder holding one), else a training checkpoint (a
    ``checkpoint.pt`` file, or a run folder with one and no export), whose recipe names the encoder."""
    path = Path(path)
    run_state = path if path.is_file() else path / CHECKPOINT_NAME
    if path.is_file() or (path.is_dir() and run_state.is_file() and not _has_export(path)):
        from .checkpoint import load_checkpoint

        stored = load_checkpoint(run_state).get("recipe")
        if not isinstance(stored, Mapping):
            raise WeightsError(f"{run_state} records no recipe; load it with create_model(RECIPE, checkpoint=...).")
        recipe = Recipe.from_dict(stored).with_overrides(backbone={"init": None})
        # a checkpoint file, like a config.json, may come from anyone: its model_args reach timm
        validate_model_args(dict(recipe.backbone.model_args), str(run_state), key="recipe.backbone.model_args")
        return dataclasses.replace(recipe_source(recipe), name=str(path), weights=run_state,
                                   origin=f"checkpoint {run_state}", init=None)
    model_dir = find_model_dir(path)
    config = read_encoder_config(model_dir)
    return ModelSource(name=str(model_dir), architecture=config["architecture"],
                       model_args=dict(config.get("model_args") or {}),
                       pretrained_cfg=dict(config.get("pretrained_cfg") or {}), weights=model_dir / WEIGHTS_NAME,
                       origin=str(model_dir), recipe=_stored_recipe(config), config=config)


def _has_export(path: Path) -> bool:
    return (path / WEIGHTS_NAME).is_file() or any(path.glob(f"*/{WEIGHTS_NAME}"))


def _stored_recipe(config: Mapping[str, Any]) -> Recipe | None:
    """The recipe an exported config.json records (``ssl_zoo.recipe_config``), if any."""
    stored = (config.get("ssl_zoo") or {}).get("recipe_config")
    return Recipe.from_dict(stored) if stored else None


def checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    """The weights file an explicit checkpoint names: the file itself, or a folder's exported encoder."""
    path = Path(checkpoint)
    if path.is_dir():
        return find_model_dir(path) / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"Checkpoint {path} does not exist (pass a .safetensors file or an "
                                   f"exported model / run folder).")
    return path


def build_model(source: ModelSource, num_classes: int = 0,
                state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Create the timm model ``source`` describes and load its weights strictly (or apply its init).

    ``state``: the tensors of ``source.weights`` when the caller has already read them.
    """
    import timm

    from . import backbones  # noqa: F401  (our timm architectures, e.g. resnet18_cifar)

    try:
        model = timm.create_model(source.architecture, pretrained=False, num_classes=num_classes,
                                  **dict(source.model_args))
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        what = f"Recipe {source.name!r} names backbone" if source.recipe is not None else f"{source.name} names"
        raise UserInputError(f"{what} {source.architecture!r}, which timm does not know. See "
                             f"timm.list_models().") from exc
    if source.weights is not None:
        load_weights_(model, source, state)
    elif source.init:
        init_weights_(model, source.init)
    # timm's own attributes (nn.Module's __setattr__ types them as tensors or modules for mypy)
    model.pretrained_cfg = model.default_cfg = {  # type: ignore[assignment]
        **source.pretrained_cfg, "num_classes": num_classes}
    return model


def load_weights_(model: nn.Module, source: ModelSource, state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Load ``source.weights`` strictly into a built model, then the recipe's official linear
    classifier when ``source.classifier`` and the head has ``weights.classifier_classes`` outputs."""
    if source.weights is None:
        raise WeightsNotPublishedError(f"{source.name} resolved to no weights file.")
    load_state_dict_strict(model, read_state_dict(source.weights) if state is None else state, source=source.origin)
    _logger.info("Loaded %s weights from %s", source.name, source.origin)
    recipe = source.recipe
    head_fits = recipe is not None and getattr(model, "num_classes", 0) == recipe.weights.classifier_classes
    if source.classifier and recipe is not None and head_fits:
        load_classifier(model, recipe)
        _logger.info("Loaded the %s linear classifier from %s", source.name, recipe.weights.classifier_url)


def init_weights_(model: nn.Module, init: str) -> None:
    """Load supervised / other weights into an encoder before SSL training; classifier keys are dropped.

    ``init`` is ``"timm:<arch.tag>"`` (timm's pretrained weights, fetched through the Hub or its
    cache) or a path to a safetensors / PyTorch state dict.
    """
    if init.startswith("timm:"):
        import timm

        try:
            state = timm.create_model(init[len("timm:"):], pretrained=True, num_classes=0).state_dict()
        except Exception as exc:  # network, offline cache miss, unknown tag: all end here
            raise WeightsError(
                f"Could not fetch the initial encoder weights {init!r}: {type(exc).__name__}: {exc}. "
                f"Without internet, pre-populate the Hugging Face cache (HF_HUB_OFFLINE=1 then reads it), "
                f"pass a local file as init='path/to/weights.safetensors', or use init=None for random "
                f"initialisation.") from exc
    else:
        if not Path(init).is_file():
            raise FileNotFoundError(f"Encoder init file {init!r} does not exist. Use 'timm:<arch.tag>' for timm "
                                    f"weights, a path to a .safetensors/.pth state dict, or None.")
        state = read_state_dict(init)
    load_state_dict_strict(model, filter_state_dict(state, drop=classifier_names(model)),
                           source=f"encoder init {init!r}")


# -- recipe weights: file > Hub > URL --------------------------------------------

def resolve_weights(recipe: Recipe, checkpoint: str | os.PathLike | None = None, *,
                    endpoint: str | None = None, token: str | bool | None = None,
                    cache_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The local, verified weights file for a recipe and where it came from, in timm's priority:
    explicit checkpoint > ``weights.file`` > ``weights.hf_hub_id`` > ``weights.url``.

    ``weights.sha256`` is checked for a file or Hub download, ``weights.md5`` / ``sha256`` for a
    URL download (an explicit ``checkpoint`` is another file and is not checked). When the Hub
    repo cannot be reached, is not cached offline or does not exist yet and the recipe has a URL,
    the URL is used instead. ``cache_dir`` is the Hugging Face cache (URL downloads use torch.hub's).
    """
    w = recipe.weights
    if checkpoint is not None:
        path = checkpoint_file(checkpoint)
        return path, f"checkpoint {path}"
    if w.file:
        path = Path(w.file)
        path = find_model_dir(path) / WEIGHTS_NAME if path.is_dir() else path
        if not path.is_file():
            raise WeightsNotFoundError(f"Recipe {recipe.name!r} points to weights file {w.file}, which does not "
                                       f"exist.")
        if w.sha256:
            verify_sha256(path, w.sha256, what=f"recipe {recipe.name!r} weights (file {path})")
        return path, f"file {path}"
    hub_failure: WeightsError | None = None
    if w.hf_hub_id:
        repo_id, rev = parse_repo_spec(w.hf_hub_id)
        revision = w.revision or rev
        where = f"hf-hub:{repo_id}@{revision or 'main'}/{w.filename}"
        try:
            path = hub_download(repo_id, w.filename, revision, endpoint=endpoint, token=token, cache_dir=cache_dir)
        except (WeightsOfflineError, WeightsNotFoundError) as exc:
            if not w.url:
                raise
            hub_failure = exc
            _logger.warning("%s: %s Using %s instead.", recipe.name, exc, w.url)
        else:
            if w.sha256:
                verify_sha256(path, w.sha256, what=f"recipe {recipe.name!r} weights ({where})")
            return path, where
    if w.url:
        try:
            return url_weights(recipe), f"url {w.url}"
        except WeightsOfflineError as exc:
            if hub_failure is None:
                raise
            raise WeightsOfflineError(f"Neither the Hub nor the URL is available for recipe {recipe.name!r}. "
                                      f"Hub: {hub_failure} URL: {exc}") from exc
    raise WeightsNotPublishedError(
        f"No pretrained weights are published for recipe {recipe.name!r} yet (its weights have no file, "
        f"hf_hub_id or url). Train them with `ssl-zoo train {recipe.name}` and load the run with "
        f"create_model({recipe.name!r}, checkpoint='RUN_DIR'), or import an upstream release with "
        f"`ssl-zoo convert SRC --source ... --out DIR` and pass checkpoint='DIR'.")


def _url_checksums(weights: WeightsCfg) -> tuple[str | None, str | None]:
    """(sha256, md5) of the file at ``weights.url``: ``sha256`` describes the Hub file when there is one."""
    return (None if weights.hf_hub_id else weights.sha256), weights.md5


def _conversion_matches(folder: Path, recipe: Recipe, sha256: str | None, md5: str | None) -> bool:
    """Whether a cached conversion holds this recipe's architecture and was made from a file with
    these checksums (when the recipe records any)."""
    if not (folder / WEIGHTS_NAME).is_file():
        return False
    try:
        config = read_encoder_config(folder)
        imported = config["ssl_zoo"]["imported"]
        same_arch = (config["architecture"] == recipe.backbone.arch and json.dumps(config.get("model_args") or {},
                     sort_keys=True) == json.dumps(dict(recipe.backbone.model_args), sort_keys=True))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not same_arch or (sha256 and imported.get("sha256") != sha256.lower()):
        return False
    return not md5 or str(imported.get("md5") or "").startswith(md5.lower())


CONVERTED_DIR = "converted"


def url_weights(recipe: Recipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ``model.safetensors`` for ``recipe.weights.url``: the download itself when it is in our
    format, else its conversion (``weights.source``, ``ssl_zoo.convert``), made once and stored in
    ``url_cache_folder(url)/converted/`` next to the download. Later calls read the conversion
    without any network access."""
    w = recipe.weights
    if w.url is None:
        raise WeightsNotPublishedError(f"Recipe {recipe.name!r} has no weights.url to download.")
    sha256, md5 = _url_checksums(w)
    if not w.source:
        return url_download(w.url, sha256=sha256, md5=md5, cache_dir=cache_dir)
    from filelock import FileLock

    if w.source not in FILTERS:
        raise WeightsError(f"Recipe {recipe.name!r} names weights.source {w.source!r}; ssl_zoo.convert knows "
                           f"{', '.join(FILTERS)}.")
    converted = url_cache_folder(w.url, cache_dir) / CONVERTED_DIR
    if _conversion_matches(converted, recipe, sha256, md5):
        return converted / WEIGHTS_NAME
    src = url_download(w.url, sha256=sha256, md5=md5, cache_dir=cache_dir)
    with FileLock(str(converted) + ".lock"):
        if _conversion_matches(converted, recipe, sha256, md5):
            return converted / WEIGHTS_NAME  # another process converted it while this one waited
        if converted.exists():
            shutil.rmtree(converted)  # made from another file (the checksum changed) or for another architecture
        with tempfile.TemporaryDirectory(prefix=".converting_", dir=converted.parent) as tmp:
            try:
                out = convert_checkpoint(src, w.source, Path(tmp) / CONVERTED_DIR, recipe=recipe)
            except ConversionError as exc:
                raise WeightsError(f"The file at {w.url} ({src}) does not convert as weights.source "
                                   f"{w.source!r} for recipe {recipe.name!r}: {exc}") from exc
            os.replace(out, converted)
    _logger.info("Converted %s (%s) into %s", w.url, w.source, converted)
    return converted / WEIGHTS_NAME


def load_classifier(model: nn.Module, recipe: Recipe) -> None:
    """Load the recipe's official linear classifier (``weights.classifier_url``) into the head of
    ``model``, whose backbone already holds the recipe's weights.

    The classifier checkpoint is downloaded once (``url_download``), converted with
    ``ssl_zoo.convert.split_linear_classifier``, its backbone checked against the model's (the
    probe trains on frozen weights, so they must be equal) and the head stored as
    ``classifier.safetensors`` next to the download; later calls read that file only.
    """
    from filelock import FileLock
    from safetensors.torch import save_file

    url = recipe.weights.classifier_url
    if url is None:
        raise WeightsNotPublishedError(f"Recipe {recipe.name!r} names no linear classifier (weights.classifier_url).")
    heads = head_prefixes(model)
    if len(heads) != 1:
        raise WeightsError(f"Recipe {recipe.name!r}: the model has no single classifier head to load {url} into.")
    head = model.get_submodule(heads[0])
    stored = url_cache_folder(url) / CLASSIFIER_NAME
    if not stored.is_file():
        src = url_download(url)
        try:
            backbone, fc = split_linear_classifier(read_state_dict(src), _without_head(model))
        except ConversionError as exc:
            raise WeightsError(f"The classifier at {url} ({src}) does not fit recipe {recipe.name!r}: {exc}") from exc
        own = model.state_dict()
        differ = [k for k, v in backbone.items() if not k.endswith("num_batches_tracked")
                  and not torch.equal(v, own[k])]
        if differ:
            raise WeightsError(f"The classifier at {url} was trained on other backbone weights than recipe "
                               f"{recipe.name!r} loads ({len(differ)} tensors differ, e.g. {differ[0]}): check the "
                               f"recipe's weights.classifier_url.")
        with FileLock(str(stored) + ".lock"):
            tmp = stored.with_name(f".{stored.name}.tmp")
            save_file({k: v.contiguous() for k, v in fc.items()}, str(tmp), metadata={"url": url})
            os.replace(tmp, stored)
    state = read_state_dict(stored)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    own_shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if shapes != own_shapes:
        raise ArchitectureMismatchError(f"The classifier at {url} has shapes {shapes}; the model's head "
                                        f"{heads[0]} has {own_shapes}.")
    head.load_state_dict(state)


def _without_head(model: nn.Module) -> nn.Module:
    """A head-less copy of a timm model's architecture (for checking a classifier's backbone keys)."""
    import copy

    bare: Any = copy.deepcopy(model)  # a timm model: reset_classifier is its own method
    bare.reset_classifier(0)
    return bare


def load_pretrained(model: nn.Module, recipe: Recipe, checkpoint: str | os.PathLike | None = None, *,
                    endpoint: str | None = None, token: str | bool | None = None,
                    cache_dir: str | os.PathLike | None = None) -> None:
    """Load a recipe's weights into a built ``model`` (file > Hub > URL, verified: ``resolve_weights``).

    When the recipe has an official linear classifier (``weights.classifier_url``) and the model's
    head has ``weights.classifier_classes`` outputs, the head is loaded from it too (not with an
    explicit ``checkpoint``); any other head stays freshly initialised.
    """
    load_weights_(model, recipe_source(recipe, pretrained=True, checkpoint=checkpoint, endpoint=endpoint,
                                       token=token, cache_dir=cache_dir))


def create_model_from_hub(repo_spec: str, pretrained: bool = True, num_classes: int = 0,
                          checkpoint: str | os.PathLike | None = None, *, endpoint: str | None = None,
                          token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                          **kwargs: Any) -> nn.Module:
    """Build the timm model a Hub repo's ``config.json`` describes and (``pretrained``) load its
    ``model.safetensors`` strictly. ``repo_spec`` is ``"org/repo"`` or ``"org/repo@revision"``;
    extra ``kwargs`` go to ``timm.create_model`` on top of the config's ``model_args``."""
    source = resolve_source(f"hf-hub:{repo_spec}", pretrained=pretrained, checkpoint=checkpoint, overrides=kwargs,
                            endpoint=endpoint, token=token, cache_dir=cache_dir)
    return build_model(source, num_classes=num_classes)


__all__ = [
    "WeightsError", "WeightsNotPublishedError", "WeightsNotFoundError", "WeightsOfflineError", "ChecksumMismatchError",
    "CorruptWeightsError", "EvalResultError", "ArchitectureMismatchError", "parse_repo_spec", "sha256_file",
    "file_digests", "verify_sha256", "verify_checksums", "find_model_dir", "read_checkpoint", "state_dict_of",
    "read_state_dict", "filter_state_dict", "head_prefixes", "classifier_names", "load_state_dict_strict",
    "ModelSource", "resolve_source", "recipe_source", "local_source", "checkpoint_file", "build_model",
    "load_weights_", "init_weights_", "resolve_weights", "load_classifier", "load_pretrained",
    "create_model_from_hub", "CLASSIFIER_NAME", "url_weights", "state_dict_sha256", "hub_download",
    "url_cache_folder", "url_download",
]
