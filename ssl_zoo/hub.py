"""The Hugging Face Hub and URL side of pretrained weights: downloads and publishing.

``hub_download`` (``hf_hub_download`` with ssl_zoo's errors), ``url_download`` (a URL-keyed cache
in torch.hub's folder, checksums, resumable) and ``url_weights`` (a URL file converted once with
``ssl_zoo.convert``) fetch files for the one loading path in ``ssl_zoo.weights``; ``push_to_hub`` /
``ssl-zoo push`` publish an exported encoder with its model card (``ssl_zoo.model_card``).

The Hub endpoint, offline flag and cache are read from ``huggingface_hub.constants`` at call
time (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``), so patching those constants or
passing ``endpoint=`` works after import. The loading and model-card names are re-exported here
(``from ssl_zoo.hub import create_model_from_hub, build_model_card`` keeps working).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .errors import SslZooError, one_line, report_user_error
from .export import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    NonFiniteWeightsError,
    describe_non_finite,
    non_finite_tensors,
    read_encoder_config,
    save_encoder,
)
from .model_card import (  # noqa: F401
    CARD_NAME,
    CITATIONS,
    EVAL_DIR,
    RESULTS_JSON,
    RESULTS_MD,
    _reproduction_table,
    build_model_card,
    eval_result_metrics,
    load_eval_results,
    run_eval_result_files,
)
from .parsers.push import configure_parser as configure_push_parser
from .recipe import Recipe, WeightsCfg
from .weights import (  # noqa: F401
    CLASSIFIER_NAME,
    ArchitectureMismatchError,
    ChecksumMismatchError,
    CorruptWeightsError,
    EvalResultError,
    WeightsError,
    WeightsNotFoundError,
    WeightsNotPublishedError,
    WeightsOfflineError,
    build_model,
    create_model_from_hub,
    file_digests,
    find_model_dir,
    head_prefixes,
    load_classifier,
    load_pretrained,
    load_state_dict_strict,
    local_source,
    parse_repo_spec,
    read_state_dict,
    resolve_weights,
    sha256_file,
    verify_checksums,
    verify_sha256,
)

_logger = logging.getLogger(__name__)

# Files of the full training state (both encoders, heads, queue, decoder, optimiser, RNG: the
# trainer's `checkpoint.pt`) and its step log, which `push_to_hub(..., include_training_state=True)`
# publishes under `training_state/`. Globs matched against file names directly in the run folder.
TRAINING_STATE_PATTERNS: tuple[str, ...] = (CHECKPOINT_NAME, "log.jsonl")
TRAINING_STATE_DIR = "training_state"


# -- downloads ------------------------------------------------------------------

def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_download(repo_id: str, filename: str, revision: str | None = None, *, endpoint: str | None = None,
                 token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                 force_download: bool = False) -> Path:
    """``hf_hub_download`` with ssl_zoo's errors; returns the cached file's path."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    host = endpoint or constants.ENDPOINT
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=endpoint, token=token,
                                    cache_dir=None if cache_dir is None else str(cache_dir),
                                    force_download=force_download,
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


def url_download(url: str, *, sha256: str | None = None, md5: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Download ``url`` once into ``url_cache_folder(url)/<file name>`` and return the path.

    The download goes to ``<name>.incomplete`` (resumed after an interruption, with a progress bar
    that ``HF_HUB_DISABLE_PROGRESS_BARS=1`` turns off: ``huggingface_hub``'s ``http_get``), is checked
    against ``sha256`` / ``md5`` and only then renamed into place; a file that fails the check is deleted.
    A cached file is checked too (and
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
    if w.url is None:
        raise WeightsNotPublishedError(f"Recipe {recipe.name!r} has no weights.url to download.")
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


# -- publishing -----------------------------------------------------------------

def training_state_files(run_dir: str | os.PathLike, patterns: Iterable[str] = TRAINING_STATE_PATTERNS) -> list[Path]:
    """Files directly in ``run_dir`` whose names match ``TRAINING_STATE_PATTERNS``."""
    root = Path(run_dir)
    return sorted(p for p in root.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def _check_exported(model_dir: Path) -> dict[str, Any]:
    """Refuse to publish a folder whose weights hold NaN/inf or do not load strictly into its config's
    architecture (built by the one loading path, ``ssl_zoo.weights.build_model``)."""
    source = local_source(model_dir)
    state = read_state_dict(model_dir / WEIGHTS_NAME)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"Refusing to publish {model_dir / WEIGHTS_NAME}: {describe_non_finite(bad)} hold "
                                    f"NaN/inf (the run diverged). Retrain with a lower learning rate or publish "
                                    f"an earlier export.")
    build_model(source, state=state)
    return dict(source.config or {})


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
                run_results: bool = True) -> Any:
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
