"""Pretrained weights: resolve (file > Hub > URL), verify, load strictly; publish to the Hub with a model card.

Loading follows timm's priority: an explicit ``checkpoint`` (file or folder), then the recipe's
``weights.file``, ``weights.hf_hub_id`` (``hf_hub_download``: cache, revision, ``HF_HUB_OFFLINE``),
``weights.url`` (also the fallback when the Hub repo is missing or unreachable). A URL is
downloaded once into torch.hub's cache under a hash of the URL, checked (md5 prefix / sha256)
and, for an upstream layout (``weights.source``), converted with ``ssl_zoo.convert`` into a
safetensors file stored next to it. Weights always end in a strict ``load_state_dict``: a
checkpoint for another architecture fails with the missing / unexpected / shape-mismatched keys listed.

The Hub endpoint, offline flag and cache are read from ``huggingface_hub.constants`` at call
time (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``), so patching those constants or
passing ``endpoint=`` works after import.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .errors import SslZooError, one_line, report_user_error
from .export import (CONFIG_NAME, WEIGHTS_NAME, NonFiniteWeightsError, describe_non_finite, non_finite_tensors,
                     read_encoder_config, save_encoder)
from .recipe import Recipe, WeightsCfg

_logger = logging.getLogger(__name__)

# Files of the full training state (both encoders, heads, queue, decoder, optimiser, RNG: the
# trainer's `checkpoint.pt`) and its step log, which `push_to_hub(..., include_training_state=True)`
# publishes under `training_state/`. Globs matched against file names directly in the run folder.
TRAINING_STATE_PATTERNS: tuple[str, ...] = (CHECKPOINT_NAME, "log.jsonl")
TRAINING_STATE_DIR = "training_state"
CARD_NAME = "README.md"
# A run folder's evaluation results (`ssl-zoo reproduce` writes one `ssl-zoo eval` JSON per protocol
# there); `push_to_hub` puts the ones that measured the pushed weights into the model-index.
EVAL_DIR = "eval"
# `ssl-zoo reproduce`'s comparison with the paper (results.json records the weights it measured).
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


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


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a PyTorch file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for every kind of damage
            raise CorruptWeightsError(
                f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file ({exc}). It is "
                f"probably truncated by an interrupted download or copy: delete it and download again "
                f"(hf_hub_download(..., force_download=True) for Hub files).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptWeightsError(
            f"Could not load {path} with torch.load(weights_only=True): {exc}. ssl_zoo never unpickles "
            f"arbitrary objects; import upstream checkpoints with `ssl-zoo convert` (it writes safetensors).") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptWeightsError(f"{path} does not hold a state dict of tensors; use `ssl-zoo convert` to "
                                  f"import it.")
    return dict(obj)


def head_prefixes(model: nn.Module) -> list[str]:
    """Module names of the classifier head (``["fc"]`` for ResNet); empty when there is none."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if head is None or isinstance(head, nn.Identity) or not list(head.parameters()):
        return []
    return [name for name, module in model.named_modules() if module is head and name]


def _strip_to_model(state: Mapping[str, torch.Tensor], expected: list[str]) -> dict[str, torch.Tensor]:
    """Strip a key prefix (``encoder.``, ``module.encoder_q.``...) when the weights sit under one,
    as in a full training-state checkpoint; the state is returned unchanged otherwise."""
    if not expected or any(k in state for k in expected):
        return dict(state)
    anchor = expected[0]
    prefixes = sorted({k[: -len(anchor)] for k in state if k.endswith(anchor)})
    covering = [p for p in prefixes if all(p + k in state for k in expected)]
    preferred = [p for p in ("encoder.", "backbone.", "model.", "module.", "module.encoder_q.",
                             "module.encoder.", "encoder_q.") if p in covering]
    if preferred:
        covering = preferred[:1]
    if len(covering) != 1:
        return dict(state)
    prefix = covering[0]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load ``state`` into ``model``; only a freshly created classifier head may stay unfilled.

    Raises ``ArchitectureMismatchError`` listing missing, unexpected and shape-mismatched keys.
    Warns (``RuntimeWarning``) when tensors hold NaN/inf: the weights load, but they come from a diverged run.
    """
    heads = head_prefixes(model)
    is_head = lambda k: any(k == h or k.startswith(h + ".") for h in heads)  # noqa: E731
    own = model.state_dict()
    expected = [k for k in own if not is_head(k)]
    state = _strip_to_model(state, expected)
    state = {k: v for k, v in state.items() if not is_head(k)}  # a new head is never loaded
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


# -- downloads ------------------------------------------------------------------

def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, revision: str | None = None, *, endpoint: str | None = None,
                 token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                 force_download: bool = False) -> Path:
    """``hf_hub_download`` with ssl_zoo's errors; returns the cached file's path."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}@{revision or 'main'}"
    host = endpoint or constants.ENDPOINT
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint, token=token,
                                    cache_dir=cache_dir, force_download=force_download,
                                    library_name="ssl_zoo"))
    except RepositoryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"Hub repo {repo_id!r} not found at {host} (or it is private and no valid token was sent: "
            f"`hf auth login` or HF_TOKEN).") from exc
    except RevisionNotFoundError as exc:
        raise WeightsNotFoundError(f"Revision {revision!r} does not exist in Hub repo {repo_id!r} at {host}.") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = ("HF_HUB_OFFLINE is set" if _offline() else f"the Hub at {host} could not be reached")
        raise WeightsOfflineError(
            f"Cannot get {filename} of {where}: {why} and the file is not in the cache {cache}. Download it "
            f"once with network access (the cache then serves it offline), or copy the repo's {WEIGHTS_NAME} and "
            f"{CONFIG_NAME} into a folder and load that folder (`ssl-zoo eval --model FOLDER`, "
            f"timm.create_model('local-dir:FOLDER', pretrained=True)).") from exc
    except EntryNotFoundError as exc:
        raise WeightsNotFoundError(f"Hub repo {where} at {host} has no file {filename!r}. An ssl_zoo model repo "
                                   f"holds {WEIGHTS_NAME}, {CONFIG_NAME} and {CARD_NAME}.") from exc
    except HfHubHTTPError as exc:
        raise WeightsError(f"Downloading {filename} of {where} from {host} failed: {exc}") from exc


def url_cache_folder(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of one URL: ``<cache>/<first 16 hex digits of sha256(url)>``.

    ``cache`` is ``cache_dir`` or ``$TORCH_HOME/hub/checkpoints/ssl_zoo`` (torch.hub's checkpoint
    cache, read at call time). Keyed by the whole URL, so two URLs that end in the same file name
    never share an entry.
    """
    root = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints" / "ssl_zoo"
    return root / hashlib.sha256(url.encode()).hexdigest()[:16]


def _url_file_name(url: str) -> str:
    return os.path.basename(urlsplit(url).path) or "download"


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


def url_download(url: str, *, sha256: str | None = None, md5: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Download ``url`` once into ``url_cache_folder(url)/<file name>`` and return the path.

    The download goes to ``<name>.incomplete`` (resumed after an interruption, with a progress bar
    that ``HF_HUB_DISABLE_PROGRESS_BARS=1`` turns off: ``huggingface_hub``'s ``http_get``), is checked against ``sha256`` / ``md5`` and only then
    renamed into place; a file that fails the check is deleted. A cached file is checked too (and
    downloaded again when it fails).
    Offline (``HF_HUB_OFFLINE``) or unreachable: ``WeightsOfflineError`` naming the URL and the path
    where a manually downloaded copy is picked up.
    """
    from filelock import FileLock

    folder = url_cache_folder(url, cache_dir)
    target = folder / _url_file_name(url)
    manual = f"download it on a machine with internet and place it at {target} (it is verified on use)"
    what = f"the file at {url}"
    if target.is_file():
        try:
            verify_checksums(target, sha256=sha256, md5=md5, what=what, discard=True)
            return target
        except ChecksumMismatchError as exc:  # deleted; e.g. the recipe's checksum is for a new upload
            if _offline():
                raise
            _logger.warning("%s Downloading it again.", exc)
    if _offline():
        raise WeightsOfflineError(f"HF_HUB_OFFLINE is set and {url} is not in the cache: {manual}, or unset "
                                  f"HF_HUB_OFFLINE.")
    folder.mkdir(parents=True, exist_ok=True)
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.file_download import http_get

    partial = target.with_name(target.name + ".incomplete")
    with FileLock(str(target) + ".lock"):  # another process may be downloading the same URL
        if not target.is_file():
            try:
                with open(partial, "ab") as fh:  # resumes a download an interruption left behind
                    http_get(url, fh, resume_size=fh.tell(), displayed_filename=target.name)
            except OfflineModeIsEnabled as exc:
                raise WeightsOfflineError(f"HF_HUB_OFFLINE is set and {url} is not in the cache: {manual}.") from exc
            except HfHubHTTPError as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                partial.unlink(missing_ok=True)
                raise WeightsNotFoundError(f"{url} answered HTTP {status}: the file moved or the URL is wrong; "
                                           f"check the recipe's weights.url, or {manual}.") from exc
            except Exception as exc:  # connection refused, DNS, timeouts, a truncated transfer
                first_line = (str(exc).strip().splitlines() or [""])[0]
                kept = partial.is_file() and partial.stat().st_size > 0
                if not kept:
                    partial.unlink(missing_ok=True)
                resume = f" ({partial.stat().st_size} bytes arrived; the next call resumes)" if kept else ""
                raise WeightsOfflineError(f"Could not download {url} ({type(exc).__name__}: {first_line}){resume}. "
                                          f"Retry, or {manual}.") from exc
            digests = verify_checksums(partial, sha256=sha256, md5=md5, what=what, discard=True)
            if not (sha256 or md5):
                _logger.warning("%s has no published checksum; the downloaded file's sha256 is %s.", url,
                                digests["sha256"])
            os.replace(partial, target)
            return target
    verify_checksums(target, sha256=sha256, md5=md5, what=what, discard=True)  # finished by another process
    return target


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
    sha256, md5 = _url_checksums(w)
    if not w.source:
        return url_download(w.url, sha256=sha256, md5=md5, cache_dir=cache_dir)
    from filelock import FileLock

    from .convert import FILTERS, ConversionError, convert_checkpoint

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
        path = Path(checkpoint)
        if path.is_dir():
            return find_model_dir(path) / WEIGHTS_NAME, f"checkpoint {path}"
        if not path.is_file():
            raise WeightsNotFoundError(f"Checkpoint {path} does not exist (pass a .safetensors file or an "
                                       f"exported model / run folder).")
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


# -- loading --------------------------------------------------------------------

CLASSIFIER_NAME = "classifier.safetensors"


def load_classifier(model: nn.Module, recipe: Recipe) -> None:
    """Load the recipe's official linear classifier (``weights.classifier_url``) into the head of
    ``model``, whose backbone already holds the recipe's weights.

    The classifier checkpoint is downloaded once (``url_download``), converted with
    ``ssl_zoo.convert.split_linear_classifier``, its backbone checked against the model's (the
    probe trains on frozen weights, so they must be equal) and the head stored as
    ``classifier.safetensors`` next to the download; later calls read that file only.
    """
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    from .convert import ConversionError, load_upstream, split_linear_classifier, state_dict_of

    url = recipe.weights.classifier_url
    heads = head_prefixes(model)
    if len(heads) != 1:
        raise WeightsError(f"Recipe {recipe.name!r}: the model has no single classifier head to load {url} into.")
    head = model.get_submodule(heads[0])
    stored = url_cache_folder(url) / CLASSIFIER_NAME
    if not stored.is_file():
        src = url_download(url)
        try:
            backbone, fc = split_linear_classifier(state_dict_of(load_upstream(src)), _without_head(model))
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
    state = load_file(str(stored))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    own_shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if shapes != own_shapes:
        raise ArchitectureMismatchError(f"The classifier at {url} has shapes {shapes}; the model's head "
                                        f"{heads[0]} has {own_shapes}.")
    head.load_state_dict(state)


def _without_head(model: nn.Module) -> nn.Module:
    """A head-less copy of a timm model's architecture (for checking a classifier's backbone keys)."""
    import copy

    bare = copy.deepcopy(model)
    bare.reset_classifier(0)
    return bare


def load_pretrained(model: nn.Module, recipe: Recipe, checkpoint: str | os.PathLike | None = None, *,
                    endpoint: str | None = None, token: str | bool | None = None,
                    cache_dir: str | os.PathLike | None = None) -> None:
    """Load a recipe's weights into ``model`` (file > Hub > URL, verified: ``resolve_weights``).

    When the recipe has an official linear classifier (``weights.classifier_url``) and the model's
    head has ``weights.classifier_classes`` outputs, the head is loaded from it too (not with an
    explicit ``checkpoint``); any other head stays freshly initialised.
    """
    path, source = resolve_weights(recipe, checkpoint, endpoint=endpoint, token=token, cache_dir=cache_dir)
    load_state_dict_strict(model, read_state_dict(path), source=source)
    _logger.info("Loaded %s weights from %s", recipe.name, source)
    w = recipe.weights
    if checkpoint is None and w.classifier_url and getattr(model, "num_classes", 0) == w.classifier_classes:
        load_classifier(model, recipe)
        _logger.info("Loaded the %s linear classifier from %s", recipe.name, w.classifier_url)


def create_model_from_hub(repo_spec: str, pretrained: bool = True, num_classes: int = 0,
                          checkpoint: str | os.PathLike | None = None, *, endpoint: str | None = None,
                          token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                          **kwargs: Any) -> nn.Module:
    """Build the timm model a Hub repo's ``config.json`` describes and (``pretrained``) load its
    ``model.safetensors`` strictly. ``repo_spec`` is ``"org/repo"`` or ``"org/repo@revision"``;
    extra ``kwargs`` go to ``timm.create_model`` on top of the config's ``model_args``."""
    import timm

    repo_id, revision = parse_repo_spec(repo_spec)
    cfg_path = hub_download(repo_id, CONFIG_NAME, revision, endpoint=endpoint, token=token, cache_dir=cache_dir)
    config = read_encoder_config(cfg_path)
    if "architecture" not in config:
        raise WeightsError(f"{CONFIG_NAME} of {repo_spec} has no 'architecture': not an ssl_zoo/timm model repo.")
    model_args = {**dict(config.get("model_args") or {}), **kwargs}
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=num_classes, **model_args)
    pretrained_cfg = {**dict(config.get("pretrained_cfg") or {}), "hf_hub_id": repo_spec, "source": "hf-hub",
                      "num_classes": num_classes}
    model.pretrained_cfg = model.default_cfg = pretrained_cfg
    if checkpoint is not None:
        path = find_model_dir(checkpoint) / WEIGHTS_NAME if Path(checkpoint).is_dir() else Path(checkpoint)
        load_state_dict_strict(model, read_state_dict(path), source=f"checkpoint {path}")
    elif pretrained:
        # Pin the weights to the commit the config came from, so a concurrent push cannot mix them.
        commit = cfg_path.parent.name if _COMMIT_RE.match(cfg_path.parent.name) else revision
        path = hub_download(repo_id, WEIGHTS_NAME, commit, endpoint=endpoint, token=token, cache_dir=cache_dir)
        load_state_dict_strict(model, read_state_dict(path), source=f"hf-hub:{repo_spec}")
    return model


# -- model card -----------------------------------------------------------------

# Citations of the methods' papers (the synth paper's authors are not in our copy of the text).
CITATIONS: dict[str, str] = {
    "moco_v2": ("@article{chen2020mocov2,\n  title={Improved Baselines with Momentum Contrastive Learning},\n"
                "  author={Chen, Xinlei and Fan, Haoqi and Girshick, Ross and He, Kaiming},\n"
                "  journal={arXiv preprint arXiv:2003.04297},\n  year={2020}\n}"),
    "simsiam": ("@inproceedings{chen2021simsiam,\n  title={Exploring Simple Siamese Representation Learning},\n"
                "  author={Chen, Xinlei and He, Kaiming},\n  booktitle={CVPR},\n  year={2021}\n}"),
    "leoclr": ("@misc{alkhalefi_leoclr,\n  title={LeOCLR: Leveraging Original Images for Contrastive Learning "
               "of Visual Representations},\n  author={Alkhalefi, Mohammad and Leontidis, Georgios and Zhong, "
               "Mingjun}\n}"),
    "synth": ("@misc{synth_fgvr_ssl,\n  title={On Learning Discriminative Features from Synthesized Data for "
              "Self-Supervised Fine-Grained Visual Recognition}\n}"),
}


# Substrings that mark a metric as an evaluation of the features (model-index); other numbers in
# config.json's metrics (final loss, step counts) are training statistics.
EVAL_METRIC_HINTS = ("acc", "knn", "linear", "top1", "top5", "map", "recall", "precision", "f1", "nmi", "ari")


def _metric_items(config: Mapping[str, Any], evaluation: bool = True) -> list[dict[str, Any]]:
    """Measured metrics of a config as ``{name, value, dataset, split, task}``; non-numbers are skipped.

    A metric is ``name: number`` or ``name: {value, dataset?, split?, task?}``. ``evaluation`` selects
    the evaluation metrics (``EVAL_METRIC_HINTS`` or an explicit ``task``), else the other numbers.
    """
    info = config.get("ssl_zoo") or {}
    default_dataset = info.get("eval_dataset") or info.get("dataset") or "unknown"
    out = []
    for name, raw in (info.get("metrics") or {}).items():
        spec = dict(raw) if isinstance(raw, Mapping) else {"value": raw}
        value = spec.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if name.endswith("_before") or spec.get("source") == "random-init":
            continue  # measured on the random initialisation (the demo's baseline): never the model's score
        lowered = name.lower()
        is_eval = bool(spec.get("task")) or any(h in lowered for h in EVAL_METRIC_HINTS)
        if is_eval != evaluation:
            continue
        if is_eval:  # 4 significant digits: 84.4444% -> 84.44, a fraction 0.87654 -> 0.8765
            value = float(f"{float(value):.4g}")
        task = spec.get("task") or "image-classification"
        out.append({"name": name, "value": value, "dataset": spec.get("dataset") or default_dataset,
                    "split": spec.get("split"), "task": task})
    return out


def eval_result_metrics(result: Mapping[str, Any], source: str = "result",
                        weights_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """The model-index metrics of one ``ssl-zoo eval`` result (its ``model_index`` block).

    Raises :class:`EvalResultError` when the result measured a randomly initialised encoder, or
    other weights than ``weights_sha256`` (when the result records the sha256 it measured). Values
    are rounded to 2 decimals; a linear probe on a share of the labels is named for it
    (``linear_top1_20pct_labels``), so the 100/50/20% results do not overwrite each other.
    """
    if not isinstance(result, Mapping) or "protocol" not in result or "model_index" not in result:
        raise EvalResultError(f"{source} is not an `ssl-zoo eval` result (no 'protocol' / 'model_index'); write one "
                              f"with `ssl-zoo eval PROTOCOL --model RUN_DIR --output FILE`.")
    model = dict(result.get("model") or {})
    if model.get("source") == "random-init":
        raise EvalResultError(f"{source} measured a randomly initialised encoder ({model.get('name')}), not trained "
                              f"weights; evaluate the run folder instead (`ssl-zoo eval PROTOCOL --model RUN_DIR`).")
    measured = model.get("weights_sha256")
    if weights_sha256 and measured and measured != weights_sha256:
        raise EvalResultError(f"{source} measured other weights (sha256 {measured[:12]}..., these are "
                              f"{weights_sha256[:12]}...); re-run that evaluation on this run folder.")
    fraction = float((result.get("settings") or {}).get("label_fraction", 1.0))
    suffix = f"_{round(100 * fraction):d}pct_labels" if result["protocol"] == "linear" and fraction < 1.0 else ""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in dict(result["model_index"]).items():
        spec = dict(raw)
        if not spec.get("split"):
            raise EvalResultError(f"{source}: metric {name!r} does not name its dataset split.")
        spec["value"] = round(float(spec["value"]), 2)
        out[name + suffix] = spec
    return out


def load_eval_results(paths: Iterable[str | os.PathLike], weights_sha256: str | None = None,
                      strict: bool = True) -> dict[str, dict[str, Any]]:
    """Merged model-index metrics of ``ssl-zoo eval`` result files.

    ``strict`` raises :class:`EvalResultError` for a result that cannot be this model's score;
    otherwise such a file is skipped with a warning naming it and why.
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise EvalResultError(f"Cannot read evaluation result {path}: {exc}") from None
        try:
            merged.update(eval_result_metrics(data, source=str(path), weights_sha256=weights_sha256))
        except EvalResultError as exc:
            if strict:
                raise
            print(f"note: skipped {exc}", file=sys.stderr)
    return merged


def run_eval_result_files(run_dir: str | os.PathLike) -> list[Path]:
    """The evaluation results stored in a run folder (``RUN/eval/*.json``), sorted."""
    folder = Path(run_dir) / EVAL_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _reproduction_table(run_dir: Path, weights_sha256: str) -> str | None:
    """``ssl-zoo reproduce``'s Markdown comparison with the paper, if it measured these weights."""
    try:
        results = json.loads((run_dir / RESULTS_JSON).read_text())
        table = (run_dir / RESULTS_MD).read_text()
    except (OSError, ValueError):
        return None
    return table if results.get("weights_sha256") == weights_sha256 else None


def build_model_card(config: Mapping[str, Any], repo_id: str, reproduction: str | None = None):
    """A ``huggingface_hub.ModelCard`` for an exported encoder's ``config.json``.

    ``reproduction`` is a Markdown table of our results beside the paper's (``ssl-zoo reproduce``).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from . import __version__

    info = dict(config.get("ssl_zoo") or {})
    recipe_cfg = dict(info.get("recipe_config") or {})
    weights_cfg = dict(recipe_cfg.get("weights") or {})
    pcfg = dict(config.get("pretrained_cfg") or {})
    method = info.get("method") or (info.get("imported") or {}).get("method") or "unknown"
    dataset = info.get("dataset")
    arch = config["architecture"]
    name = repo_id.split("/")[-1]
    metrics = _metric_items(config)
    eval_results = [EvalResult(task_type=m["task"], dataset_type=m["dataset"], dataset_name=m["dataset"],
                               dataset_split=m["split"], metric_type=m["name"], metric_name=m["name"],
                               metric_value=m["value"]) for m in metrics] or None
    license_id = weights_cfg.get("license") or pcfg.get("license") or "apache-2.0"
    card_data = ModelCardData(
        library_name="timm",  # timm's hf-hub: loader reads this layout; ssl_zoo reads it too
        license=license_id, tags=["image-feature-extraction", "self-supervised", "ssl_zoo", method, arch],
        datasets=[dataset] if dataset else None, pipeline_tag="image-feature-extraction",
        model_name=name, eval_results=eval_results)
    lines = [f"# {name}", ""]
    description = recipe_cfg.get("description")
    if description:
        lines += [description, ""]
    trained = (f"trained on `{dataset}` for {info['epochs']} epochs" if dataset and info.get("epochs")
               else f"trained on `{dataset}`" if dataset else "")
    imported = info.get("imported")
    version = info.get("version", __version__)
    recipe_note = f" (recipe `{info['recipe']}`)." if info.get("recipe") else "."
    if imported:  # trained by the upstream authors; ssl_zoo only converted the keys
        lines += [f"A self-supervised **{method}** encoder (`{arch}`) {trained} by the authors of the upstream "
                  f"release, converted to timm's layout with ssl_zoo {version}" + recipe_note]
    else:
        lines += [f"A self-supervised **{method}** encoder (`{arch}`) {trained} with ssl_zoo {version}" + recipe_note]
    lines += [f"It outputs pooled {config.get('num_features', '?')}-d features (no classifier head).", ""]
    if imported:
        origin = f" {weights_cfg['url']}" if weights_cfg.get("url") else ""
        md5 = f", md5 `{imported['md5']}`" if imported.get("md5") else ""
        lines += [f"Imported from the upstream `{imported.get('source')}` checkpoint{origin} "
                  f"(`{imported.get('file')}`, sha256 `{imported.get('sha256')}`{md5}) with `ssl-zoo convert`: "
                  f"the backbone only (heads, momentum encoder, queue and optimiser state dropped). License: "
                  f"{license_id}, as upstream.", ""]
    size = pcfg.get("input_size")
    lines += ["## Usage", "", "```python", "import ssl_zoo", "",
              f'model = ssl_zoo.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
              f"features = model(images)  # (B, 3, H, W) -> (B, {config.get('num_features', 'D')})", "```", "",
              "The same weights in timm:", "", "```python", "import timm", "",
              f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
              "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
              "features = model(transform(image).unsqueeze(0))", "```", ""]
    if size:
        lines += [f"Preprocessing: input size {size}, mean {pcfg.get('mean')}, std {pcfg.get('std')}, "
                  f"interpolation {pcfg.get('interpolation')}, crop_pct {pcfg.get('crop_pct')}.", ""]
    if metrics:
        lines += ["## Evaluation", "", "| metric | dataset | split | value |", "|---|---|---|---|"]
        lines += [f"| {m['name']} | {m['dataset']} | {m['split'] or ''} | {m['value']} |" for m in metrics]
        lines += [""]
    if reproduction:
        lines += ["## Reproduction", "", "Measured with `ssl-zoo reproduce`, beside the numbers the paper reports:",
                  "", reproduction.strip(), ""]
    lines += ["## Training", "",
              "The full recipe (method arguments, augmentation, optimiser schedule) is in `config.json` under "
              "`ssl_zoo.recipe_config`.", ""]
    stats = _metric_items(config, evaluation=False)
    if stats:
        lines += ["End of training: " + ", ".join(f"{m['name']} {m['value']}" for m in stats) + ".", ""]
    paper = weights_cfg.get("paper") or pcfg.get("paper")
    citation = CITATIONS.get(method)
    if citation or paper:
        lines += ["## Citation", ""]
        if paper:
            lines += [f"Paper: {paper}", ""]
        if citation:
            lines += ["```bibtex", citation, "```", ""]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content)


# -- publishing -----------------------------------------------------------------

def training_state_files(run_dir: str | os.PathLike, patterns: Iterable[str] = TRAINING_STATE_PATTERNS) -> list[Path]:
    """Files directly in ``run_dir`` whose names match ``TRAINING_STATE_PATTERNS``."""
    root = Path(run_dir)
    return sorted(p for p in root.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def _check_exported(model_dir: Path) -> dict[str, Any]:
    """Refuse to publish a folder whose weights hold NaN/inf or do not load strictly into its config's
    architecture."""
    import timm

    config = read_encoder_config(model_dir)
    if "architecture" not in config:
        raise WeightsError(f"{model_dir / CONFIG_NAME} has no 'architecture'; re-export with ssl_zoo.export.save_encoder.")
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=0,
                              **dict(config.get("model_args") or {}))
    state = read_state_dict(model_dir / WEIGHTS_NAME)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"Refusing to publish {model_dir / WEIGHTS_NAME}: {describe_non_finite(bad)} hold "
                                    f"NaN/inf (the run diverged). Retrain with a lower learning rate or publish "
                                    f"an earlier export.")
    load_state_dict_strict(model, state, source=str(model_dir / WEIGHTS_NAME))
    return config


def _export_module(model: nn.Module, out_dir: Path, recipe: Recipe | None = None) -> Path:
    """Write an in-memory encoder in our format. Without ``recipe``, the registered recipe named by
    its ``pretrained_cfg['tag']`` is used when its backbone is the module's architecture."""
    from .recipe import get_recipe

    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    arch = cfg.get("architecture")
    if recipe is None and cfg.get("tag"):
        try:
            found = get_recipe(cfg["tag"])
        except KeyError:
            found = None
        recipe = found if found is not None and found.backbone.arch == arch else None
    if recipe is None and not arch:
        raise WeightsError("push_to_hub got a module without pretrained_cfg['architecture']; build it with "
                           "ssl_zoo.create_model / timm.create_model, pass recipe=..., or pass an exported folder.")
    if head_prefixes(model):
        raise WeightsError("push_to_hub publishes encoders (num_classes=0); this module has a classifier head. "
                           "Call model.reset_classifier(0) first.")
    return save_encoder(model, out_dir, recipe=recipe, architecture=arch if recipe is None else None)


def push_to_hub(run_dir_or_model: str | os.PathLike | nn.Module, repo_id: str, private: bool = False,
                revision: str | None = None, token: str | None = None, endpoint: str | None = None,
                commit_message: str | None = None, include_training_state: bool = False,
                recipe: Recipe | None = None, results: Iterable[str | os.PathLike] | None = None,
                run_results: bool = True):
    """Publish an exported encoder (a run / model folder, or an in-memory timm encoder) to a Hub repo.

    Uploads ``model.safetensors``, ``config.json`` and a generated model card ``README.md`` in one
    commit (and ``training_state/`` when asked); creates the repo (and branch ``revision``) if
    needed. Re-pushing changed files makes a new commit; unchanged files are skipped by the Hub.
    ``recipe`` describes an in-memory module (method, dataset, preprocessing) for its config.json.
    ``results`` are ``ssl-zoo eval`` result files whose metrics go into the card's model-index (and
    the uploaded config.json); one that measured a random-init encoder or other weights is refused.
    With ``run_results`` the folder's own ``eval/*.json`` are added too, such files skipped with a note.
    Returns ``huggingface_hub.CommitInfo``. The token is sent to the Hub only, never printed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    parse_repo_spec(repo_id)
    if "@" in repo_id:
        raise ValueError(f"Pass the revision as revision=..., not in the repo id {repo_id!r}.")
    with tempfile.TemporaryDirectory(prefix="ssl_zoo_push_") as tmp:
        if isinstance(run_dir_or_model, nn.Module):
            run_dir = model_dir = _export_module(run_dir_or_model, Path(tmp), recipe)
        else:
            run_dir = Path(run_dir_or_model)
            model_dir = find_model_dir(run_dir)
        config = _check_exported(model_dir)
        weights_sha = sha256_file(model_dir / WEIGHTS_NAME)
        metrics: dict[str, dict[str, Any]] = {}
        reproduction = None
        if run_results and not isinstance(run_dir_or_model, nn.Module):
            metrics.update(load_eval_results(run_eval_result_files(run_dir), weights_sha, strict=False))
            reproduction = _reproduction_table(run_dir, weights_sha)
        metrics.update(load_eval_results(results or (), weights_sha, strict=True))
        config_file: str | bytes = str(model_dir / CONFIG_NAME)
        if metrics:
            info = dict(config.get("ssl_zoo") or {})
            info["metrics"] = {**dict(info.get("metrics") or {}), **metrics}
            config = {**config, "ssl_zoo": info}
            config_file = (json.dumps(config, indent=2) + "\n").encode()
        card = build_model_card(config, repo_id, reproduction=reproduction)
        operations = [
            CommitOperationAdd(WEIGHTS_NAME, str(model_dir / WEIGHTS_NAME)),
            CommitOperationAdd(CONFIG_NAME, config_file),
            CommitOperationAdd(CARD_NAME, str(card).encode()),
        ]
        if include_training_state:
            state_files = training_state_files(run_dir)
            if not state_files:
                raise WeightsNotFoundError(
                    f"include_training_state=True but {run_dir} has no training-state file (looked for "
                    f"{', '.join(TRAINING_STATE_PATTERNS)}).")
            operations += [CommitOperationAdd(f"{TRAINING_STATE_DIR}/{p.name}", str(p)) for p in state_files]
        api = HfApi(endpoint=endpoint, token=token, library_name="ssl_zoo")
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        message = commit_message or (f"Upload {config.get('ssl_zoo', {}).get('recipe') or config['architecture']} "
                                     f"encoder with ssl_zoo")
        return api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)


def configure_push_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run or model folder holding model.safetensors + config.json")
    parser.add_argument("--repo", required=True, help="Hub repo id, org/name")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--include-training-state", action="store_true",
                        help=f"also upload the run's full training state under {TRAINING_STATE_DIR}/")
    parser.add_argument("--results", nargs="+", default=[], metavar="JSON",
                        help=f"`ssl-zoo eval --output` files to put in the card's model-index (RUN_DIR/{EVAL_DIR}/*.json "
                             f"are added too); a result of a random-init encoder or of other weights is refused")
    parser.add_argument("--no-run-results", dest="run_results", action="store_false",
                        help=f"do not add the run folder's own {EVAL_DIR}/*.json results")


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def run_push(args: argparse.Namespace) -> int:
    """``ssl-zoo push``: the token comes from HF_TOKEN or `hf auth login`, never from the command line."""
    from huggingface_hub import get_token

    token = get_token()
    try:
        info = push_to_hub(args.run_dir, args.repo, private=args.private, revision=args.revision,
                           endpoint=args.endpoint, commit_message=args.message,
                           include_training_state=args.include_training_state, results=args.results,
                           run_results=args.run_results)
    except (SslZooError, ValueError, OSError) as exc:  # NaN/inf weights: exit 1 (a diverged model), else 2
        return report_user_error(exc, prefix="ssl-zoo push: ", scrub=lambda text: _scrub(text, token))
    except Exception as exc:  # httpx transport errors (unreachable host) are not OSErrors
        network = ("httpx", "httpcore", "huggingface_hub", "requests", "urllib3")
        if not any(cls.__module__.startswith(network) for cls in type(exc).__mro__):
            raise
        print(f"error: ssl-zoo push: cannot reach the Hub ({type(exc).__name__}: "
              f"{one_line(_scrub(str(exc), token))}). Check --endpoint / HF_ENDPOINT and the network.",
              file=sys.stderr)
        return 2
    weights = find_model_dir(args.run_dir) / WEIGHTS_NAME
    print(f"Pushed {args.run_dir} to {args.repo}: {info.commit_url}")
    print(f"commit {info.oid}")
    print(f"{WEIGHTS_NAME} sha256 {sha256_file(weights)}")
    print(f"recipe weights: WeightsCfg(hf_hub_id={args.repo!r}, revision={info.oid!r}, "
          f"sha256={sha256_file(weights)!r})")
    return 0


__all__ = [
    "WeightsError", "WeightsNotPublishedError", "WeightsNotFoundError", "WeightsOfflineError",
    "ChecksumMismatchError", "CorruptWeightsError", "ArchitectureMismatchError", "TRAINING_STATE_PATTERNS",
    "parse_repo_spec", "sha256_file", "file_digests", "verify_sha256", "verify_checksums", "find_model_dir",
    "read_state_dict", "head_prefixes", "load_state_dict_strict", "hub_download", "url_cache_folder",
    "url_download", "url_weights", "resolve_weights", "load_classifier", "load_pretrained",
    "create_model_from_hub", "build_model_card", "training_state_files", "push_to_hub", "EvalResultError",
    "eval_result_metrics", "load_eval_results", "run_eval_result_files", "EVAL_DIR",
    "configure_push_parser", "run_push",
]
