"""A run folder that explains itself: ``curves.png`` and ``README.md`` at the end of training, and the
``ssl-zoo eval`` results of that folder added to the README's table (emptied when training writes it again).

``describe_run(run_dir)`` is what ``ssl_zoo.train`` calls once its encoder is exported (main process only); it
never raises: a picture or a README that cannot be written is a warning, not a failed run. The README says the
recipe, the data and image count, the steps and epochs done, the final numbers, and how to load, resume,
evaluate, embed and push. ``update_run_readme(run_dir, record)`` adds (or replaces, for the same model, dataset
and protocol) a row in its evaluation table; a README this module did not write (``ssl-zoo reproduce`` puts its
model card there) is left alone.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

README_NAME = "README.md"
MARK = "<!-- written by ssl_zoo.run_readme: regenerated at the end of training; edits are lost -->"
EVAL_START = "<!-- ssl_zoo:evaluations -->"
EVAL_END = "<!-- /ssl_zoo:evaluations -->"
EVAL_HEADER = ("| model | dataset | protocol | result | world size | wall time |\n"
               "|---|---|---|---|---|---|")  # ssl_zoo.report.markdown_header
NO_EVAL = "No evaluation yet: `ssl-zoo eval PROTOCOL --model {run}` adds its result here."


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "log.jsonl").is_file() and (path / "config.json").is_file()


def describe_run(run_dir: str | Path, log: Callable[[str], Any] = print) -> None:
    """Draw ``curves.png`` and write ``README.md`` in a finished run folder; problems become warnings."""
    run = Path(run_dir)
    try:
        from .plots import CURVES_NAME, plot_runs

        plot_runs([run], run / CURVES_NAME)
        log(f"Drew the training curves: {run / CURVES_NAME}")
    except Exception as exc:  # a picture must never fail a finished training run
        warnings.warn(f"could not draw {run / 'curves.png'}: {exc}", RuntimeWarning, stacklevel=2)
    try:
        readme = run / README_NAME
        if readme.is_file() and MARK not in readme.read_text():
            log(f"Left {readme} as it is (not written by ssl_zoo: your notes or a model card).")
        else:
            write_run_readme(run)
            log(f"Wrote {readme} (what this run is and how to use it).")
    except Exception as exc:
        warnings.warn(f"could not write {run / README_NAME}: {exc}", RuntimeWarning, stacklevel=2)


def write_run_readme(run_dir: str | Path) -> Path:
    """``README.md`` of a run folder from its ``config.json`` and ``log.jsonl``. Its evaluation table starts empty:
    a run trained further (``--resume``) or again (``--overwrite``) has new weights, which old results do not
    describe."""
    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    readme = run / README_NAME
    readme.write_text(render_readme(run, config, _last_values(run), []))
    return readme


def _last_values(run: Path) -> dict[str, Any]:
    from .plots import describe, read_curves

    try:
        return describe(read_curves(run))
    except Exception:  # no usable log: the README still tells what the run is
        return {}


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def render_readme(run: Path, config: Mapping[str, Any], last: Mapping[str, Any], eval_rows: list[str]) -> str:
    info = dict(config.get("ssl_zoo") or {})
    train = dict(info.get("train") or {})
    metrics = dict(info.get("metrics") or {})
    recipe = info.get("recipe") or "?"
    dataset = info.get("dataset") or "?"
    data = train.get("data")
    steps, total = metrics.get("steps"), train.get("total_steps")
    epochs_done, epochs = metrics.get("epochs_done"), info.get("epochs")
    per_epoch = train.get("steps_per_epoch")
    path = str(run)
    where = f" from `{data}`" if data else " (embedded, no folder)" if dataset == "digits" else ""
    data_line = f"`{dataset}`{where}"
    if train.get("num_images") is not None:
        data_line += f", {train['num_images']:,} images"
    for key in ("layout", "data_layout"):  # recorded by newer training code: which folder layout was read
        if train.get(key):
            data_line += f" ({train[key]})"
    length = f"{steps} of {total} planned optimiser steps"
    if per_epoch and isinstance(steps, int):
        length += (f" = {steps / per_epoch:.2f} epochs of {per_epoch} steps ({epochs_done} whole epoch(s) done; "
                   f"the recipe asks for {epochs})")
    rows = [("recipe", f"`{recipe}` ({info.get('method', '?')}, `{config.get('architecture', '?')}`, "
                       f"{config.get('num_features', '?')}-d features)"),
            ("data", data_line),
            ("training", length),
            ("batch / lr", f"global batch {train.get('global_batch', '?')} on {train.get('num_processes', '?')} "
                           f"process(es), peak lr {_fmt(train.get('lr', '?'))}, seed {train.get('seed', '?')}, "
                           f"mixed precision {train.get('mixed_precision', '?')}")]
    if metrics.get("final_loss") is not None:
        rows.append(("final loss", f"{_fmt(metrics['final_loss'])} (last step)"
                     + (f"; last epoch mean {_fmt(last['epoch_loss'])}" if "epoch_loss" in last else "")))
    if "knn_top1" in last:
        rows.append(("k-NN top-1 (monitor)", f"{last['knn_top1']:.2f}% (k=20, `--knn-every`, last check)"))
    if "feature_std" in last:
        dim = config.get("num_features")
        healthy = f", healthy about {1 / dim ** 0.5:.3g}" if dim else ""
        rows.append(("feature std (collapse)", f"{last['feature_std']:.3g}{healthy}"))
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    resume_data = f" --data {data}" if data else ""
    # `ssl-zoo eval` reads the run's own data by default (config.json's ssl_zoo.data); only labels can be missing
    kind = (info.get("data") or {}).get("kind") or train.get("data_kind")
    eval_data = {"unlabelled": " --data CLASS_TREE --holdout 0.2  # needs labels: a folder per class",
                 "class_tree": " --holdout 0.2  # a seeded 20% of each class is scored"}.get(kind or "", "")
    embed_data = data or "FOLDER"
    curves = "![training curves](curves.png)\n\n" if (run / "curves.png").is_file() else ""
    evals = "\n".join([EVAL_HEADER, *eval_rows]) if eval_rows else NO_EVAL.format(run=path)
    return f"""{MARK}
# Run `{run.name}`: {recipe}

{table}

{curves}`ssl-zoo plot {path}` redraws these curves; `ssl-zoo plot {path} OTHER_RUN --output both.png` compares runs.

## Use it

```python
import ssl_zoo
encoder = ssl_zoo.create_model("local-dir:{path}")  # (B, 3, H, W) -> (B, {config.get('num_features', 'D')})
```

```bash
# continue or extend the training (a larger --epochs extends a finished run)
ssl-zoo train {recipe} --output {path}{resume_data} --resume --epochs N
# evaluate (k-NN; also linear, retrieval, ...): the result is added to the table below
ssl-zoo eval knn --model {path}{eval_data}
# embeddings of a folder, its nearest neighbours and its 2-D map
ssl-zoo embed --model {path} --data {embed_data} --output embeddings.safetensors
ssl-zoo neighbors --model {path} --data {embed_data} --output neighbors.png
ssl-zoo map --model {path} --data {embed_data} --output map.png
# publish on the Hugging Face Hub (weights, config and a model card)
ssl-zoo push {path} --repo ORG/NAME
```

## Evaluations

{EVAL_START}
{evals}
{EVAL_END}
"""


def _eval_rows(text: str) -> list[str]:
    if EVAL_START not in text or EVAL_END not in text:
        return []
    block = text.split(EVAL_START, 1)[1].split(EVAL_END, 1)[0]
    return [line for line in block.strip().splitlines()
            if line.startswith("| ") and not line.startswith("| model |") and not line.startswith("|---")]


def _row_key(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")][:3]  # model, dataset, protocol


def update_run_readme(run_dir: str | Path | None, result_record: Mapping[str, Any]) -> bool:
    """Add ``ssl-zoo eval``'s result to the evaluation table of a run folder's README (replacing the row of the
    same model, dataset and protocol). Returns False, doing nothing, when ``run_dir`` is not a training run folder
    or its README is not ours; a failure to write is a warning."""
    if run_dir is None:
        return False
    run = Path(run_dir).expanduser()
    if not _is_run_folder(run):
        return False
    readme = run / README_NAME
    try:
        if readme.is_file() and MARK not in readme.read_text():
            return False  # someone else's README (a reproduce model card, the user's own notes)
        if not readme.is_file():
            write_run_readme(run)
        from .report import markdown_row

        row = markdown_row(dict(result_record))
        text = readme.read_text()
        rows = [r for r in _eval_rows(text) if _row_key(r) != _row_key(row)] + [row]
        block = "\n".join([EVAL_HEADER, *rows])
        head, rest = text.split(EVAL_START, 1)
        tail = rest.split(EVAL_END, 1)[1]
        readme.write_text(f"{head}{EVAL_START}\n{block}\n{EVAL_END}{tail}")
        return True
    except Exception as exc:  # the result was printed and written; the README is a convenience
        warnings.warn(f"could not add the result to {readme}: {exc}", RuntimeWarning, stacklevel=2)
        return False
