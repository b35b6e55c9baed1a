"""Publishing to the Hugging Face Hub: ``push_to_hub`` / ``ssl-zoo push`` upload an exported encoder with its
model card (``ssl_zoo.model_card``).

Fetching lives in ``ssl_zoo.download`` (``hub_download``, ``url_download``: verified, bounded retries) and
loading in ``ssl_zoo.weights`` (``url_weights``, ``create_model_from_hub``); their public names are
re-exported here (``from ssl_zoo.hub import url_download, create_model_from_hub, build_model_card`` keeps
working). Imports run download <- weights <- hub; nothing below imports this module.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import CHECKPOINT_NAME
from .download import (  # noqa: F401  (re-exported)
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
from .errors import SslZooError, one_line, report_user_error
from .export import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    NonFiniteWeightsError,
    describe_non_finite,
    non_finite_tensors,
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
from .recipe import Recipe
from .weights import (  # noqa: F401
    CLASSIFIER_NAME,
    CONVERTED_DIR,
    ArchitectureMismatchError,
    EvalResultError,
    WeightsNotPublishedError,
    build_model,
    create_model_from_hub,
    find_model_dir,
    head_prefixes,
    load_classifier,
    load_pretrained,
    load_state_dict_strict,
    local_source,
    parse_repo_spec,
    read_state_dict,
    resolve_weights,
    state_dict_sha256,
    url_weights,
)

_logger = logging.getLogger(__name__)

# Files of the full training state (both encoders, heads, queue, decoder, optimiser, RNG: the
# trainer's `checkpoint.pt`) and its step log, which `push_to_hub(..., include_training_state=True)`
# publishes under `training_state/`. Globs matched against file names directly in the run folder.
TRAINING_STATE_PATTERNS: tuple[str, ...] = (CHECKPOINT_NAME, "log.jsonl")
TRAINING_STATE_DIR = "training_state"


# -- publishing -----------------------------------------------------------------

def training_state_files(run_dir: str | os.PathLike, patterns: Iterable[str] = TRAINING_STATE_PATTERNS) -> list[Path]:
    """Files directly in ``run_dir`` whose names match ``TRAINING_STATE_PATTERNS``."""
    root = Path(run_dir)
    return sorted(p for p in root.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns))


def _check_exported(model_dir: Path) -> tuple[dict[str, Any], str]:
    """Refuse to publish a folder whose weights hold NaN/inf or do not load strictly into its config's
    architecture (built by the one loading path, ``ssl_zoo.weights.build_model``); returns its config and
    the weights' state-dict digest (what results of these weights record besides the file's sha256)."""
    source = local_source(model_dir)
    state = read_state_dict(model_dir / WEIGHTS_NAME)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"Refusing to publish {model_dir / WEIGHTS_NAME}: {describe_non_finite(bad)} hold "
                                    f"NaN/inf (the run diverged). Retrain with a lower learning rate or publish "
                                    f"an earlier export.")
    build_model(source, state=state)
    return dict(source.config or {}), state_dict_sha256(state)


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
        config, state_sha = _check_exported(model_dir)
        weights_sha = sha256_file(model_dir / WEIGHTS_NAME)
        metrics: dict[str, dict[str, Any]] = {}
        reproduction = None
        if run_results and not isinstance(run_dir_or_model, nn.Module):
            metrics.update(load_eval_results(run_eval_result_files(run_dir), weights_sha, strict=False,
                                             state_dict_sha256=state_sha))
            reproduction = _reproduction_table(run_dir, weights_sha)
        metrics.update(load_eval_results(results or (), weights_sha, strict=True, state_dict_sha256=state_sha))
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
