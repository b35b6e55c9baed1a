"""What a measured number needs next to it: the machine it was measured on and the command; and how the
numbers are written: benchmark tables (:func:`write_report`) and the evaluation record of ``ssl-zoo eval`` /
``benchmarks/*.py`` (:func:`build_result`: JSON, :func:`markdown_row`: a docs/results.md row)."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    import torch  # here, not at the top: `ssl-zoo reproduce --help` imports this module and no torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "nproc": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def machine_line(info: dict[str, Any] | None = None) -> str:
    m = info or machine_info()
    device = m.get("cuda") or "CPU only"
    return (f"Machine: `{m['platform']}`, nproc {m['nproc']}, {device}, torch {m['torch']} "
            f"({m['torch_threads']} threads), Python {m['python']}.")


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command as a user would type it (``prog`` + the arguments this process got)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([prog, *map(shlex.quote, args)])


def footer_lines(prog: str, argv: Sequence[str] | None = None) -> list[str]:
    """The machine line and the command block that close every measured Markdown table."""
    return ["", machine_line(), "", "Command:", "", f"```\n{command_line(prog, argv)}\n```", ""]


def write_report(text: str, data: Mapping[str, Any], markdown: str | os.PathLike | None = None,
                 json_path: str | os.PathLike | None = None, echo: bool = True) -> None:
    """A benchmark's outputs: print the Markdown ``text`` (``echo``), write it and the JSON ``data`` where asked."""
    if echo:
        print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(data, indent=2) + "\n")
    if markdown:
        Path(markdown).write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (readers never see half a file); creates the folder."""
    from .export import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def append_markdown_row(path: str | os.PathLike, row: str, header: str) -> None:
    """Append a table row; a new or empty file gets ``header`` first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a") as fh:
        if new:
            fh.write(header + "\n")
        fh.write(row + "\n")


# -- the evaluation record (ssl-zoo eval, benchmarks/*.py; schema in docs/benchmarks.md) -------------------

METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "rank1": "rank-1", "rank5": "rank-5", "mAP": "mAP"}


def build_result(protocol: str, metrics: dict[str, float], model: dict[str, Any], dataset: dict[str, Any],
                 settings: dict[str, Any], wall_time_s: float, world_size: int,
                 baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON record of one benchmark run (schema in docs/benchmarks.md).

    What binds it to what it measured: ``model.weights_sha256`` / ``model.state_dict_sha256``
    (``ssl_zoo.state_dicts.weights_digests``), ``model.name``, ``dataset.name`` / ``test_split`` /
    ``fingerprint`` (``ssl_zoo.data.fingerprint``) and ``protocol`` (each ``model_index`` entry names its split
    and protocol too). ``baseline`` (optional): the same method's untrained encoder measured the same way,
    ``{"init": str, "bn_stats": "recomputed" | "init", "metrics": {name: value}}``; each metric it covers gets
    ``baseline: {value, init, bn_stats}`` in ``model_index``, which the model card shows beside the score.
    """
    from . import __version__

    machine = machine_info()
    index = model_index_metrics(protocol, metrics, dataset, settings)
    if baseline is not None:
        add_baseline(index, protocol, baseline)
    return {
        "protocol": protocol,
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "metrics_unit": "percent (train_loss: nats)",
        "model": model,
        "dataset": dataset,
        "settings": settings,
        "model_index": index,
        **({"baseline": dict(baseline)} if baseline is not None else {}),
        "ssl_zoo_version": __version__,
        "torch_version": machine["torch"],
        "platform": machine["platform"],
        "device": machine["cuda"] or machine["processor"] or "cpu",
        "world_size": world_size,
        "wall_time_s": round(wall_time_s, 2),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


BN_STATS = ("recomputed", "init")  # a baseline's BatchNorm statistics: recomputed on the training images, or init


def split_label(dataset: dict[str, Any]) -> str | None:
    """The split a result was measured on, in words: ``test``, or ``20% held out of train (seed 0)`` for a
    ``--holdout`` evaluation (whose test part is carved out of the train split, not a test split on disk)."""
    holdout = dataset.get("holdout")
    if isinstance(holdout, dict) and holdout.get("fraction"):
        return (f"{100 * float(holdout['fraction']):g}% held out of {holdout.get('from_split', 'train')} "
                f"(seed {holdout.get('seed', 0)})")
    return dataset.get("test_split")


def model_index_metrics(protocol: str, metrics: dict[str, float], dataset: dict[str, Any],
                        settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics in the form ``config.json``'s ``ssl_zoo.metrics`` takes for the model card's model-index:
    ``{value, dataset, split, task, protocol}`` (``protocol``: the Markdown row's label, e.g. "k-NN (T=0.07)")."""
    task = "image-retrieval" if protocol == "retrieval" else "image-classification"
    split = split_label(dataset)
    try:
        label = protocol_label({"protocol": protocol, "settings": dict(settings or {})})
    except (KeyError, TypeError):  # settings without the fields the label names
        label = protocol
    out = {}
    for name, value in metrics.items():
        if name == "train_loss":
            continue
        out[f"{protocol}_{name}"] = {"value": round(float(value), 2), "dataset": dataset.get("name"),
                                     "split": split, "task": task, "protocol": label}
    return out


def add_baseline(index: dict[str, Any], protocol: str, baseline: Mapping[str, Any]) -> None:
    """Put ``baseline["metrics"][name]`` beside each ``index[f"{protocol}_{name}"]`` as ``baseline: {value, init,
    bn_stats}``; raises ``ValueError`` for a malformed baseline."""
    bn_stats, init = baseline.get("bn_stats"), baseline.get("init")
    if bn_stats not in BN_STATS or not isinstance(init, str) or not isinstance(baseline.get("metrics"), Mapping):
        raise ValueError(f"baseline needs init (str), bn_stats ({' or '.join(BN_STATS)}) and metrics (an object); "
                         f"got {dict(baseline)}")
    for name, value in baseline["metrics"].items():
        key = f"{protocol}_{name}"
        if key in index:
            index[key]["baseline"] = {"value": round(float(value), 2), "init": init, "bn_stats": bn_stats}


def markdown_header(protocol: str | None = None) -> str:
    return ("| model | dataset | protocol | result | world size | wall time |\n"
            "|---|---|---|---|---|---|")


def protocol_label(result: dict[str, Any]) -> str:
    """The Markdown row's protocol cell."""
    s, protocol = result["settings"], result["protocol"]
    if protocol == "linear":
        return (f"linear ({'cached features' if s.get('cached_features') else 'MoCo'}, "
                f"{100 * s['label_fraction']:g}% labels, {s['epochs']} ep)")
    if protocol == "knn":
        return f"k-NN (T={s['temperature']:g})"
    if protocol == "finetune":
        labels = (f"split file {Path(s['split_file']).name}" if s.get("split_file")
                  else f"{100 * s['label_fraction']:g}% labels")
        return f"fine-tune ({labels}, {s['epochs']} ep)"
    if protocol == "transfer":
        sel = s["selected"]
        return f"transfer fine-tune ({s['epochs']} ep, selected lr {sel['lr']:g} wd {sel['weight_decay']:g})"
    if protocol == "crop-robustness":
        return "crop robustness (" + ("fine-tuned head" if str(s.get("classifier", "")).startswith("fine-tuned")
                                      else "linear probe") + ")"
    return protocol


def markdown_row(result: dict[str, Any]) -> str:
    """``| model | dataset | protocol | result | world size | wall time |`` for docs/results.md."""
    d = result["dataset"]
    parts = []
    for name, value in result["metrics"].items():
        if name == "train_loss":
            continue
        label = METRIC_LABELS.get(name) or name.replace("top1_k", "top-1 k=")
        parts.append(f"{label} {value:.2f}")
    model = result["model"]
    local = model["source"] in ("pretrained", "hf-hub", "local")
    model_name = model["name"] + ("" if local else f" ({model['source']})")
    dataset = f"{d['name']} ({split_label(d) or 'test'})"
    return (f"| {model_name} | {dataset} | {protocol_label(result)} | {', '.join(parts)} | {result['world_size']} | "
            f"{result['wall_time_s']:.0f} s |")
