"""Model cards for exported encoders: the Hub README (model-index, usage, citation) and the
evaluation results that go into it (``ssl-zoo eval`` result files, a run folder's ``eval/*.json``).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .weights import EvalResultError

if TYPE_CHECKING:  # huggingface_hub loads on first use (`ssl-zoo --help` stays fast)
    from huggingface_hub import ModelCard, ModelCardData

CARD_NAME = "README.md"
# A run folder's evaluation results (`ssl-zoo reproduce` writes one `ssl-zoo eval` JSON per protocol
# there); `push_to_hub` puts the ones that measured the pushed weights into the model-index.
EVAL_DIR = "eval"
# `ssl-zoo reproduce`'s comparison with the paper (results.json records the weights it measured).
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"

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
    """Measured metrics of a config as ``{name, value, dataset, split, task, protocol, baseline}``; non-numbers
    are skipped.

    A metric is ``name: number`` or ``name: {value, dataset?, split?, task?, protocol?, baseline?}``
    (``baseline``: ``{value, init, bn_stats}``, the same method's untrained encoder measured the same way).
    A bare number's split and protocol come from ``ssl_zoo.eval`` (``{dataset, split, protocol}``, the demo's);
    a ``NAME_before`` number is ``NAME``'s baseline (the randomly initialised encoder training started from; its
    BatchNorm statistics recomputed on the training images where ``NAME_init_bn_before`` stands beside it, else at
    init). ``evaluation`` selects the evaluation metrics (``EVAL_METRIC_HINTS`` or an
    explicit ``task``), else the other numbers.
    """
    info = config.get("ssl_zoo") or {}
    evaluated = dict(info.get("eval") or {})
    default_dataset = evaluated.get("dataset") or info.get("eval_dataset") or info.get("dataset") or "unknown"
    raw_metrics = dict(info.get("metrics") or {})
    out = []
    for name, raw in raw_metrics.items():
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
        baseline = spec.get("baseline")
        before = raw_metrics.get(f"{name}_before")
        if baseline is None and isinstance(before, (int, float)) and not isinstance(before, bool):
            seed = (info.get("demo") or info.get("train") or {}).get("seed")
            init = "random init" + (f", seed {seed}" if seed is not None else "") + ", the run's starting point"
            # the demo records both: NAME_before (BN statistics recomputed, ssl_zoo.evaluation.baseline) and
            # NAME_init_bn_before (initial statistics); a record with only NAME_before predates the recomputation
            recomputed = f"{name}_init_bn_before" in raw_metrics
            baseline = {"value": before, "init": init, "bn_stats": "recomputed" if recomputed else "init"}
        task = spec.get("task") or "image-classification"
        out.append({"name": name, "value": value, "dataset": spec.get("dataset") or default_dataset,
                    "split": spec.get("split") or evaluated.get("split"), "task": task,
                    "protocol": spec.get("protocol") or evaluated.get("protocol"),
                    "baseline": baseline if isinstance(baseline, Mapping) else None})
    return out


def eval_result_metrics(result: Mapping[str, Any], source: str = "result", weights_sha256: str | None = None,
                        *, state_dict_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """The model-index metrics of one ``ssl-zoo eval`` result (its ``model_index`` block).

    Raises :class:`EvalResultError` when the result measured a randomly initialised encoder, records no
    weights digest (``model.weights_sha256`` of the file / ``model.state_dict_sha256`` of the state dict,
    ``ssl_zoo.state_dicts.weights_digests``), or, when the caller names the weights (``weights_sha256`` of
    their ``model.safetensors``, ``state_dict_sha256``), measured other weights: every digest both record
    must agree, and at least one must be recorded by both. Values
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
    measured_file, measured_state = model.get("weights_sha256"), model.get("state_dict_sha256")
    if not measured_file and not measured_state:
        raise EvalResultError(f"{source} records no weights digest (model.weights_sha256 / state_dict_sha256), so "
                              f"nothing shows it measured these weights; re-run it with `ssl-zoo eval PROTOCOL "
                              f"--model RUN_DIR --output FILE`.")
    if weights_sha256 or state_dict_sha256:
        # every digest both sides know must agree, and at least one must be known to both
        pairs = [(m, w) for m, w in ((measured_file, weights_sha256), (measured_state, state_dict_sha256)) if m and w]
        if not pairs or any(m != w for m, w in pairs):
            shown = (f"sha256 {measured_file[:12]}..." if measured_file else
                     f"state-dict sha256 {str(measured_state)[:12]}...")
            mine = (f"{weights_sha256[:12]}..." if weights_sha256 and measured_file else
                    f"{str(state_dict_sha256)[:12]}...")
            raise EvalResultError(f"{source} measured other weights ({shown}, these are {mine}); re-run that "
                                  f"evaluation on this run folder.")
    fraction = float((result.get("settings") or {}).get("label_fraction", 1.0))
    suffix = f"_{round(100 * fraction):d}pct_labels" if result["protocol"] == "linear" and fraction < 1.0 else ""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in dict(result["model_index"]).items():
        spec = dict(raw)
        if not spec.get("split"):
            raise EvalResultError(f"{source}: metric {name!r} does not name its dataset split.")
        spec["value"] = round(float(spec["value"]), 2)
        spec.setdefault("protocol", result["protocol"])
        out[name + suffix] = spec
    return out


def load_eval_results(paths: Iterable[str | os.PathLike], weights_sha256: str | None,
                      strict: bool = True, *, state_dict_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """Merged model-index metrics of ``ssl-zoo eval`` result files that measured the weights whose
    ``model.safetensors`` has ``weights_sha256`` (or whose state dict has ``state_dict_sha256``).

    ``strict`` raises :class:`EvalResultError` for a result that cannot be this model's score (random init,
    no digest, other weights); otherwise such a file is skipped with a note naming it and why.
    """
    if not (weights_sha256 or state_dict_sha256):
        raise ValueError("load_eval_results needs the digest of the weights the results must have measured.")
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise EvalResultError(f"Cannot read evaluation result {path}: {exc}") from None
        try:
            merged.update(eval_result_metrics(data, source=str(path), weights_sha256=weights_sha256,
                                              state_dict_sha256=state_dict_sha256))
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


def _card_facts(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a config.json the card's sections read (method, dataset, license, ...)."""
    info = dict(config.get("ssl_zoo") or {})
    recipe_cfg = dict(info.get("recipe_config") or {})
    weights_cfg = dict(recipe_cfg.get("weights") or {})
    pcfg = dict(config.get("pretrained_cfg") or {})
    return {"info": info, "recipe_cfg": recipe_cfg, "weights_cfg": weights_cfg, "pcfg": pcfg,
            "method": info.get("method") or (info.get("imported") or {}).get("method") or "unknown",
            "dataset": info.get("dataset"), "arch": config["architecture"],
            "license": weights_cfg.get("license") or pcfg.get("license") or "apache-2.0"}


def _card_data(facts: Mapping[str, Any], name: str, metrics: list[dict[str, Any]]) -> ModelCardData:
    """The card's YAML metadata, with the evaluation metrics as its model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = [EvalResult(task_type=m["task"], dataset_type=m["dataset"], dataset_name=m["dataset"],
                               dataset_split=m["split"], metric_type=m["name"], metric_name=m["name"],
                               metric_value=m["value"]) for m in metrics] or None
    dataset = facts["dataset"]
    return ModelCardData(
        library_name="timm",  # timm's hf-hub: loader reads this layout; ssl_zoo reads it too
        license=facts["license"],
        tags=["image-feature-extraction", "self-supervised", "ssl_zoo", facts["method"], facts["arch"]],
        datasets=[dataset] if dataset else None, pipeline_tag="image-feature-extraction",
        model_name=name, eval_results=eval_results)


def _intro_lines(config: Mapping[str, Any], facts: Mapping[str, Any], name: str) -> list[str]:
    """Title, description, what was trained (or imported) where and with which ssl_zoo."""
    from . import __version__

    info, method, arch, dataset = facts["info"], facts["method"], facts["arch"], facts["dataset"]
    lines = [f"# {name}", ""]
    description = facts["recipe_cfg"].get("description")
    if description:
        lines += [description, ""]
    imported = info.get("imported")
    trained = _trained_phrase(info, dataset, bool(imported))
    version = info.get("version", __version__)
    recipe_note = f" (recipe `{info['recipe']}`)." if info.get("recipe") else "."
    if imported:  # trained by the upstream authors; ssl_zoo only converted the keys
        lines += [f"A self-supervised **{method}** encoder (`{arch}`) {trained} by the authors of the upstream "
                  f"release, converted to timm's layout with ssl_zoo {version}" + recipe_note]
    else:
        lines += [f"A self-supervised **{method}** encoder (`{arch}`) {trained} with ssl_zoo {version}" + recipe_note]
    lines += [f"It outputs pooled {config.get('num_features', '?')}-d features (no classifier head).", ""]
    if imported:
        weights_cfg = facts["weights_cfg"]
        origin = f" {weights_cfg['url']}" if weights_cfg.get("url") else ""
        md5 = f", md5 `{imported['md5']}`" if imported.get("md5") else ""
        lines += [f"Imported from the upstream `{imported.get('source')}` checkpoint{origin} "
                  f"(`{imported.get('file')}`, sha256 `{imported.get('sha256')}`{md5}) with `ssl-zoo convert`: "
                  f"the backbone only (heads, momentum encoder, queue and optimiser state dropped). License: "
                  f"{facts['license']}, as upstream.", ""]
    return lines


STOP_REASONS = {
    "completed": "the recipe's full {planned} epochs",
    "max-steps": "stopped by max-steps (--max-steps) before the recipe's {planned} epochs",
}


def _trained_phrase(info: Mapping[str, Any], dataset: str | None, imported: bool) -> str:
    """What training happened: the steps and (fractional) epochs actually done, images seen and why the run
    stopped (``ssl_zoo.progress``, written by the training loop); never the recipe's plan as if it were done."""
    if not dataset:
        return ""
    progress = info.get("progress")
    planned = info.get("epochs")
    if isinstance(progress, Mapping) and isinstance(progress.get("steps"), int):
        reason = progress.get("stop_reason") or "unknown"
        why = STOP_REASONS.get(reason, "stopped: {reason}").format(planned=planned, reason=reason)
        epochs = progress.get("epochs")
        seen = progress.get("images_seen")
        done = f"{float(epochs):.3g} epochs" if isinstance(epochs, (int, float)) else "epochs not recorded"
        seen_text = f", {seen:,} images seen" if isinstance(seen, int) else ""
        return f"trained on `{dataset}` for {progress['steps']} optimiser steps ({done}{seen_text}; {why})"
    if imported and planned:  # the upstream release's own training, as its paper reports it
        return f"trained on `{dataset}` for {planned} epochs"
    if planned:
        return f"trained on `{dataset}` (its recipe plans {planned} epochs; the steps done were not recorded)"
    return f"trained on `{dataset}`"


def timm_needs_ssl_zoo(arch: str) -> bool | None:
    """Whether plain timm (a process that never imports ssl_zoo) builds ``arch``: False when timm itself
    registers it, True when ssl_zoo does (``import ssl_zoo`` registers it with timm), None when neither knows it."""
    import timm

    from . import backbones  # noqa: F401  (registers ssl_zoo's architectures, so they can be told apart)

    try:
        entry = timm.models.model_entrypoint(arch)
    except RuntimeError:  # "Unknown model"
        return None
    return not str(getattr(entry, "__module__", "")).startswith("timm.")


def _timm_lines(arch: str, repo_id: str) -> list[str]:
    """The timm snippet: as is only where plain timm builds the architecture (checked in a fresh process by
    tests/test_trust_probes.py); otherwise what to import first, or that timm cannot build it."""
    needs = timm_needs_ssl_zoo(arch)
    body = [f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
            "features = model(transform(image).unsqueeze(0))", "```", ""]
    if needs is None:
        return [f"timm does not know the architecture `{arch}`: load these weights with ssl_zoo.", ""]
    if needs:
        return [f"The same weights in timm, once ssl_zoo is imported: `{arch}` is ssl_zoo's architecture, not "
                f"timm's, and `import ssl_zoo` registers it with timm (without it timm answers "
                f"`Unknown model ({arch})`):", "", "```python", f"import ssl_zoo  # registers {arch} with timm",
                "import timm", "", *body]
    return ["The same weights in timm (no ssl_zoo needed):", "", "```python", "import timm", "", *body]


def _usage_lines(config: Mapping[str, Any], pcfg: Mapping[str, Any], repo_id: str) -> list[str]:
    """How to load the repo with ssl_zoo and with timm, and its preprocessing."""
    lines = ["## Usage", "", "```python", "import ssl_zoo", "",
             f'model = ssl_zoo.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
             f"features = model(images)  # (B, 3, H, W) -> (B, {config.get('num_features', 'D')})", "```", ""]
    lines += _timm_lines(str(config["architecture"]), repo_id)
    if pcfg.get("input_size"):
        lines += [f"Preprocessing: input size {pcfg['input_size']}, mean {pcfg.get('mean')}, std {pcfg.get('std')}, "
                  f"interpolation {pcfg.get('interpolation')}, crop_pct {pcfg.get('crop_pct')}.", ""]
    return lines


def _results_lines(config: Mapping[str, Any], metrics: list[dict[str, Any]], reproduction: str | None) -> list[str]:
    """The evaluation table, the comparison with the paper and the end-of-training statistics."""
    lines: list[str] = []
    if metrics:
        lines += ["## Evaluation", "",
                  "Each score was measured on these weights (results without a matching weights digest are refused) "
                  "beside the same method's untrained encoder, measured the same way, where one was measured.", "",
                  "| metric | dataset | split | protocol | value | untrained baseline |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['name']} | {m['dataset']} | {m['split'] or 'not recorded'} | "
                  f"{m.get('protocol') or 'not recorded'} | {m['value']} | {_baseline_cell(m.get('baseline'))} |"
                  for m in metrics]
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
    return lines


def _baseline_cell(baseline: Mapping[str, Any] | None) -> str:
    """``12.5 (untrained: <init>; BN statistics recomputed on the training images)``, or that none was measured."""
    if not baseline or not isinstance(baseline.get("value"), (int, float)):
        return "untrained baseline: not measured"
    stats = ("BN statistics recomputed on the training images" if baseline.get("bn_stats") == "recomputed"
             else "BN statistics at init")
    return f"{float(baseline['value']):.4g} (untrained: {baseline.get('init') or 'init not recorded'}; {stats})"


def _citation_lines(facts: Mapping[str, Any]) -> list[str]:
    paper = facts["weights_cfg"].get("paper") or facts["pcfg"].get("paper")
    citation = CITATIONS.get(facts["method"])
    lines: list[str] = ["## Citation", ""] if citation or paper else []
    if paper:
        lines += [f"Paper: {paper}", ""]
    if citation:
        lines += ["```bibtex", citation, "```", ""]
    return lines


def build_model_card(config: Mapping[str, Any], repo_id: str, reproduction: str | None = None) -> ModelCard:
    """A ``huggingface_hub.ModelCard`` for an exported encoder's ``config.json``.

    ``reproduction`` is a Markdown table of our results beside the paper's (``ssl-zoo reproduce``).
    """
    from huggingface_hub import ModelCard

    facts = _card_facts(config)
    name = repo_id.split("/")[-1]
    metrics = _metric_items(config)
    lines = (_intro_lines(config, facts, name) + _usage_lines(config, facts["pcfg"], repo_id)
             + _results_lines(config, metrics, reproduction) + _citation_lines(facts))
    content = f"---\n{_card_data(facts, name, metrics).to_yaml()}\n---\n\n" + "\n".join(lines)
    return ModelCard(content)


__all__ = ["CARD_NAME", "EVAL_DIR", "RESULTS_JSON", "RESULTS_MD", "CITATIONS", "EVAL_METRIC_HINTS", "EvalResultError",
           "eval_result_metrics", "load_eval_results", "run_eval_result_files", "build_model_card"]
