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
with the missing / unexpected / shape-mismatched keys listed. Downloads live in ``ssl_zoo.hub``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .errors import SslZooError, UserInputError
from .export import CONFIG_NAME, WEIGHTS_NAME, describe_non_finite, non_finite_tensors, read_encoder_config
from .recipe import Recipe

_logger = logging.getLogger(__name__)

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
CLASSIFIER_NAME = "classifier.safetensors"
# Where a training checkpoint (or a full-method state dict) keeps the encoder; tried in this order
# when the weights do not sit at the top level.
ENCODER_PREFIXES = ("encoder.", "backbone.", "model.", "module.", "module.encoder_q.", "module.encoder.", "encoder_q.")


# -- errors -------------------------------------------------------------------

class WeightsError(SslZooError, RuntimeError):
    """Base class of every pretrained-weights error ssl_zoo raises."""


class WeightsNotPublishedError(WeightsError):
    """The recipe has no weight location (no file, Hub repo or URL)."""


class WeightsNotFoundError(WeightsError):
    """The named file, folder, Hub repo, revision or file in the repo does not exist."""


class WeightsOfflineError(WeightsError):
    """Offline (or the Hub is unreachable) and the file is not in the local cache."""


class ChecksumMismatchError(WeightsError):
    """The file's sha256 (or a URL file's md5) differs from the one the recipe records."""


class CorruptWeightsError(WeightsError):
    """The file is truncated or not a readable safetensors / state-dict file."""


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


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(path: str | os.PathLike, chunk_size: int = 1 << 20) -> dict[str, str]:
    """Hex ``md5`` and ``sha256`` of a file, in one pass."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def verify_sha256(path: str | os.PathLike, expected: str, what: str = "weights") -> None:
    """Raise ``ChecksumMismatchError`` unless the file's sha256 is ``expected``."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower().strip():
        raise ChecksumMismatchError(
            f"Checksum mismatch for {what} at {path}: sha256 is {actual}, the recipe records {expected}. "
            f"The file is corrupt or was replaced upstream. Delete that file and load again (it is downloaded "
            f"anew); if the new upload is intended, update the recipe's weights.sha256.")


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


def verify_checksums(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
                     what: str = "weights", discard: bool = False) -> dict[str, str]:
    """Check a file against a sha256 and / or an md5 (or md5 prefix); returns the file's digests.

    On a mismatch raises ``ChecksumMismatchError``; with ``discard`` the file is deleted first, so
    a bad download never stays in the cache.
    """
    digests = file_digests(path)
    problems = []
    if sha256 and digests["sha256"] != sha256.lower().strip():
        problems.append(f"sha256 is {digests['sha256']}, expected {sha256}")
    if md5 and not digests["md5"].startswith(md5.lower().strip()):
        problems.append(f"md5 is {digests['md5']}, expected {'a prefix ' if len(md5) < 32 else ''}{md5}")
    if problems:
        if discard:
            Path(path).unlink(missing_ok=True)
        kept = "It was deleted from the cache; run again to download it anew. " if discard else ""
        raise ChecksumMismatchError(
            f"Checksum mismatch for {what} ({path}): {'; '.join(problems)}. The download is corrupt or the file "
            f"changed upstream. {kept}If the new file is intended, update the recipe's weights checksum.")
    return digests


# -- reading, filtering, strict loading ------------------------------------------

def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A weights file as a dict: a ``.safetensors`` file, or any other file as a PyTorch pickle read
    with ``torch.load(weights_only=True)`` (legacy and upstream checkpoints: never arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types for every kind of damage
            raise CorruptWeightsError(
                f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file ({exc}). It is "
                f"probably truncated by an interrupted download or copy: delete it and download again "
                f"(hf_hub_download(..., force_download=True) for Hub files).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptWeightsError(
            f"torch.load(weights_only=True) refused {path}: {exc}. ssl_zoo never unpickles arbitrary Python "
            f"objects. If you trust the file, re-save just its tensors in a trusted environment, e.g. "
            f"torch.save(torch.load(path, weights_only=False)['state_dict'], 'state_dict.pt'), and load or "
            f"convert that (`ssl-zoo convert` writes safetensors).") from exc
    if not isinstance(obj, Mapping):
        raise CorruptWeightsError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or state dict.")
    return dict(obj)


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its ``state_dict`` / ``model`` / ``module`` entry, or the dict itself."""
    for key in ("state_dict", "model", "module"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``read_checkpoint`` + ``state_dict_of``); the one reader."""
    state = state_dict_of(read_checkpoint(path))
    if not state:
        raise CorruptWeightsError(f"{path} does not hold a state dict of tensors; use `ssl-zoo convert` to "
                                  f"import it.")
    return state


def filter_state_dict(state: Mapping[str, torch.Tensor], *, prefixes: Sequence[str] = (),
                      drop: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The keys under the first of ``prefixes`` that holds any, with the prefix removed (every key
    when no prefix is given; none when no prefix matches), less the keys of the modules in ``drop``
    (classifier heads). The one prefix / head filter of loading, init and conversion."""
    sub = dict(state)
    if prefixes:
        sub = next(({k[len(p):]: v for k, v in state.items() if k.startswith(p)} for p in prefixes
                    if any(k.startswith(p) for k in state)), {})
    return {k: v for k, v in sub.items() if not any(k == d or k.startswith(d + ".") for d in drop)}


def head_prefixes(model: nn.Module) -> list[str]:
    """Module names of the classifier head (``["fc"]`` for ResNet); empty when there is none."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if head is None or isinstance(head, nn.Identity) or not list(head.parameters()):
        return []
    return [name for name, module in model.named_modules() if module is head and name]


def classifier_names(model: nn.Module) -> list[str]:
    """Where the architecture keeps its classifier (``fc`` and timm's ``pretrained_cfg['classifier']``),
    whether or not this model has one: the keys a supervised checkpoint adds to an encoder's."""
    import timm

    names = ["fc"]
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    classifier = cfg.get("classifier")
    if classifier is None and cfg.get("architecture"):
        try:
            default = timm.models.get_pretrained_cfg(cfg["architecture"])
            classifier = default.classifier if default is not None else None
        except Exception:  # an architecture without a default cfg (ours): fc only
            classifier = None
    if classifier:
        names += [classifier] if isinstance(classifier, str) else list(classifier)
    return names


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
    from .hub import hub_download

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
    from .hub import hub_download, url_weights

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

    from .convert import ConversionError, split_linear_classifier
    from .hub import url_cache_folder, url_download

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
    "create_model_from_hub", "CLASSIFIER_NAME",
]
