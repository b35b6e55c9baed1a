"""``ssl-zoo reproduce RECIPE``: one command from data to a published model card.

Stages, in order, each skipped when its result already exists and each resumable:

1. ``decoder_pretrain`` (synth recipes): the decoder pre-training of the paper's Appendix B.2,
   into ``RUN/decoder_pretrain`` (``train()`` runs it; ``--stop-after decoder_pretrain`` runs it alone).
2. ``pretrain``: self-supervised training through ``ssl_zoo.train.train`` (``resume=True`` when the
   run folder holds a checkpoint), ending in ``RUN/model.safetensors`` + ``config.json``.
3. ``evaluate``: the recipe's declared protocols (``Recipe.evaluation``), one ``ssl-zoo eval`` run
   each, written to ``RUN/eval/<protocol>.json`` (e.g. ``linear_20.json``) with the sha256 of the
   weights it measured. A protocol is done when its JSON measured the current weights.
4. ``report``: ``RUN/results.json`` + ``RUN/results.md``, our numbers beside the paper's
   (``Recipe.paper_results``, each citing its table).
5. ``card``: ``RUN/README.md``, the model card with the model-index of step 3.
6. ``push`` (``--push org/name``): ``push_to_hub`` with the evaluation results and the comparison.

``RUN/reproduce.json`` records the options of the first invocation (a later one with other
options is refused: it would be another experiment) and what each derived stage was built from;
``RUN/reproduce.jsonl`` logs every stage of every invocation as ``ran`` or ``skipped``.

``--push`` is checked before any work (the repo id; online, a token the Hub accepts). Under ``accelerate
launch`` (or ``torchrun``) every process trains and evaluates; the main process alone writes the stage log, the
state, the evaluation records, the report and the card, and pushes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import SslZooError, report_user_error
from .recipe import EvalProtocol, Recipe
from .report import write_json

STATE_NAME = "reproduce.json"
STAGE_LOG = "reproduce.jsonl"
STAGES = ("decoder_pretrain", "pretrain", "evaluate", "report", "card", "push")
MEASURED_HEADER = "| protocol | metric | ours | paper | paper source |\n|---|---|---|---|---|"


class ReproduceError(SslZooError, RuntimeError):
    """The run folder or the options do not allow continuing (one line names what to do)."""


# ----------------------------------------------------------------------------------------- helpers
def _is_main_process() -> bool:
    """Rank 0 of an ``accelerate launch`` / ``torchrun`` launch (or the only process): it alone writes the stage log,
    the state, the evaluation records, the report and the card, and pushes; the others train and evaluate."""
    return os.environ.get("RANK", "0") == "0"


def trained_recipe_dict(recipe: Recipe, data: str | None) -> dict[str, Any]:
    """The recipe as ``train`` records it: a folder given to a digits recipe is trained as an imagefolder."""
    if recipe.dataset == "digits" and data is not None:
        recipe = recipe.with_overrides(dataset="imagefolder")
    return recipe.to_dict()


def check_push_target(push: str, endpoint: str | None, log: Callable[[str], None]) -> None:
    """``--push``, checked before any work: the repo id's form, then (online) that a token is there and the Hub
    accepts it. Offline (``HF_HUB_OFFLINE``) or with the Hub unreachable the login is not checked (said so)."""
    from huggingface_hub import constants, get_token

    from .weights import parse_repo_spec

    try:
        _, revision = parse_repo_spec(push)
    except ValueError:
        raise ReproduceError(f"--push {push!r} is not a Hub repo id: expected 'org/name' (letters, digits, '-', '_', "
                             f"'.'), e.g. --push my-org/{'moco_v2_synth_r18_digits'}.") from None
    if revision is not None:
        raise ReproduceError(f"--push {push!r}: name the repo without '@revision' (the push makes a new commit).")
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
    if offline:
        log(f"--push {push}: HF_HUB_OFFLINE is set, so the Hub login is not checked now; the push (the last stage) "
            f"needs the network and a token.")
        return
    token = get_token()
    if token is None:
        raise ReproduceError(f"--push {push}: no Hub token (HF_TOKEN is unset and `hf auth login` was not run); log "
                             f"in first, or drop --push (the same command with --push later pushes only).")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi(endpoint=endpoint).whoami(token=token)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ReproduceError(f"--push {push}: the Hub refused the token (HTTP {status}); log in again "
                                 f"(`hf auth login` or HF_TOKEN), or drop --push.") from None
        log(f"--push {push}: could not check the Hub login (HTTP {status}); the push at the end will tell.")
    except _network_errors() as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        log(f"--push {push}: the Hub is unreachable ({_scrub(first)}), so the login is not checked now; the push "
            f"at the end will try again.")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _without_decoder_weights(recipe_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe dict without the decoder file the synth stage inserts (same experiment either way)."""
    out = json.loads(json.dumps(recipe_dict))
    (out.get("method_args") or {}).pop("decoder_weights", None)
    return out


def eval_dataset_name(recipe: Recipe, eval_data: str | None) -> str:
    """The dataset ``ssl-zoo eval`` reads: a folder given to a digits recipe is an imagefolder (as in train)."""
    return "imagefolder" if recipe.dataset == "digits" and eval_data is not None else recipe.dataset


def eval_argv(protocol: EvalProtocol, run_dir: Path, dataset: str, eval_data: str | None, *, seed: int,
              num_workers: int | None, epochs: int | None, batch_size: int | None) -> list[str]:
    """The ``ssl-zoo eval`` command line of one declared protocol on a run folder."""
    argv = [protocol.protocol, "--model", str(run_dir), "--dataset", dataset, "--train-split", protocol.train_split,
            "--test-split", protocol.test_split, "--seed", str(seed)]
    if num_workers is not None:
        argv += ["--num-workers", str(num_workers)]
    if eval_data is not None:
        argv += ["--data", eval_data]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    if protocol.protocol == "linear":
        n = protocol.epochs if epochs is None else epochs
        argv += ["--epochs", str(n), "--label-fraction", str(protocol.label_fraction)]
        if "milestones" not in protocol.options:  # the MoCo schedule (60 and 80 of 100) scaled to the epochs
            argv += ["--milestones", str(round(0.6 * n)), str(round(0.8 * n))]
    elif protocol.protocol == "knn":
        argv += ["--k", *[str(k) for k in protocol.k]]
    return argv


def _eval_namespace(argv: list[str], options: Mapping[str, Any]) -> argparse.Namespace:
    from .evaluation.cli import configure_parser

    parser = argparse.ArgumentParser(prog="ssl-zoo eval")
    configure_parser(parser)
    args = parser.parse_args(argv)
    for key, value in options.items():
        if not hasattr(args, key):
            raise ReproduceError(f"Evaluation option {key!r} is not an `ssl-zoo eval` option; fix the recipe's "
                                 f"EvalProtocol.options.")
        setattr(args, key, list(value) if isinstance(value, tuple) else value)
    from .evaluation.cli import _validate

    _validate(args)  # the checks and protocol defaults `ssl-zoo eval` applies (e.g. the probe's lr 30)
    return args


def comparison_rows(recipe: Recipe, measured: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One row per (protocol, metric): our value (None if not measured) beside the paper's (None if not reported)."""
    paper = {(r.protocol, r.metric): r for r in recipe.paper_results}
    rows = []
    for protocol in recipe.evaluation:
        ours = {k: v for k, v in (measured.get(protocol.key) or {}).items() if k != "train_loss"}
        names = list(ours) + [m for (p, m) in paper if p == protocol.key and m not in ours]
        for metric in names:
            ref = paper.get((protocol.key, metric))
            rows.append({"protocol": protocol.key, "metric": metric,
                         "ours": round(float(ours[metric]), 2) if metric in ours else None,
                         "paper": ref.value if ref else None, "paper_source": ref.source if ref else None})
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(v: Any, fmt: str = "{:.2f}") -> str:
        return "—" if v is None else fmt.format(v)

    lines = [MEASURED_HEADER]
    lines += [f"| {r['protocol']} | {r['metric']} | {cell(r['ours'])} | {cell(r['paper'])} | "
              f"{r['paper_source'] or '—'} |" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- stages
class _Run:
    """The run folder, its state file and its stage log."""

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.out, self.log = out, log
        self.state_path, self.log_path = out / STATE_NAME, out / STAGE_LOG
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.events: list[dict[str, Any]] = []

    def record(self, stage: str, status: str, detail: str = "") -> None:
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stage": stage, "status": status, "detail": detail}
        self.events.append(event)
        if not _is_main_process():
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(event) + "\n")
        self.log(f"[{stage}] {status}{': ' + detail if detail else ''}")

    def save(self) -> None:
        if not _is_main_process():
            return
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, self.state)

    def derived_done(self, stage: str, inputs: str, output: Path | None = None) -> bool:
        return self.state.get("stages", {}).get(stage) == inputs and (output is None or output.is_file())

    def mark(self, stage: str, inputs: str) -> None:
        self.state.setdefault("stages", {})[stage] = inputs
        self.save()


def reproduce(recipe: str | Recipe, *, data: str | None = None, eval_data: str | None = None,
              output: str | Path | None = None, push: str | None = None, epochs: int | None = None,
              max_steps: int | None = None, batch_size: int | None = None, eval_epochs: int | None = None,
              eval_batch_size: int | None = None, overrides: Mapping[str, Any] | None = None, seed: int = 0,
              num_workers: int | None = None, stop_after: str | None = None, endpoint: str | None = None,
              private: bool = False, progress_bar: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) a recipe's paper pipeline into ``output``; see the module docstring.

    ``epochs``, ``max_steps``, ``batch_size`` and ``overrides`` go to pre-training (and the synth
    decoder stage); ``eval_epochs`` / ``eval_batch_size`` replace the protocols' linear-probe epochs
    and the evaluation batch. Returns ``{"run", "stages": [events], "rows", "interrupted", "stopped_after"}``.
    """
    from .train import resolve_recipe

    if stop_after is not None and stop_after not in STAGES:
        raise ReproduceError(f"--stop-after {stop_after!r} is not a stage; use one of {', '.join(STAGES)}.")
    recipe = resolve_recipe(recipe, epochs=epochs, batch_size=batch_size, overrides=overrides)
    if not recipe.evaluation:
        raise ReproduceError(f"Recipe {recipe.name!r} declares no evaluation protocols (Recipe.evaluation); "
                             f"`ssl-zoo list` and docs/benchmarks.md show the recipes that do.")
    if push is not None:  # before any work: a wrong id or a missing login would only show after all of it
        check_push_target(push, endpoint, log)
    out = Path(output) if output is not None else Path("runs") / recipe.name
    eval_data = data if eval_data is None else eval_data
    run = _open_run(out, log, {"recipe": recipe.to_dict(), "data": data, "eval_data": eval_data,
                               "max_steps": max_steps, "seed": seed, "eval_epochs": eval_epochs,
                               "eval_batch_size": eval_batch_size})
    result: dict[str, Any] = {"run": str(out), "stages": run.events, "rows": [], "interrupted": False,
                              "stopped_after": None}

    # 1-2: decoder pre-training and pre-training
    train_kwargs = dict(data=data, seed=seed, num_workers=num_workers, progress_bar=progress_bar)
    if not _pretraining(recipe, out, run, result, stop_after, max_steps, train_kwargs):
        return result
    if _stop_here("pretrain", stop_after, result, log) or result["stopped_after"]:
        return result

    # 3: evaluation protocols
    from .hub import sha256_file

    weights_sha = sha256_file(out / "model.safetensors")
    measured, inputs = _evaluate(recipe, out, run, weights_sha, eval_data, seed=seed, num_workers=num_workers,
                                 epochs=eval_epochs, batch_size=eval_batch_size)
    if _stop_here("evaluate", stop_after, result, log):
        return result
    if not _is_main_process():  # the report, the card and the push are the main process's
        return result
    # 4-6: our numbers beside the paper's, the model card, the push
    table, report_inputs = _report(recipe, out, run, result, measured, inputs, weights_sha)
    if _stop_here("report", stop_after, result, log):
        return result
    repo_id = push or f"ssl-zoo/{recipe.name}"  # the repo the card names: --push, else the zoo's ssl-zoo/RECIPE
    card_inputs = _card(recipe, out, run, table, report_inputs, repo_id, weights_sha)
    if _stop_here("card", stop_after, result, log) or push is None:
        return result
    _push(recipe, out, run, push, _digest({"card": card_inputs, "endpoint": endpoint}), endpoint, private)
    return result


def _open_run(out: Path, log: Callable[[str], None], options: dict[str, Any]) -> _Run:
    """The reproduction in ``out``: a new one records ``options``; an existing one must have been started with them."""
    run = _Run(out, log)
    if run.state.get("options") not in (None, options):
        changed = sorted(k for k in options if run.state["options"].get(k) != options[k])
        raise ReproduceError(f"{out} holds a reproduction started with other options ({', '.join(changed)} differ); "
                             f"pass the same options to continue it, or choose another --output.")
    if run.state.get("options") is None:
        run.state["options"] = options
        run.save()
    return run


def _stop_here(stage: str, stop_after: str | None, result: dict[str, Any], log: Callable[[str], None]) -> bool:
    """Whether --stop-after ends the pipeline at ``stage`` (then recorded in ``result``)."""
    if stop_after == stage:
        result["stopped_after"] = stage
        log(f"Stopped after {stage} (--stop-after); run the same command without it to continue.")
        return True
    return False


def _report(recipe: Recipe, out: Path, run: _Run, result: dict[str, Any], measured: dict[str, Any],
            inputs: Any, weights_sha: str) -> tuple[str, str]:
    """Stage 4: RUN/results.json + results.md (our numbers beside the paper's); returns the table and its digest."""
    rows = comparison_rows(recipe, measured)
    result["rows"] = rows
    report_inputs = _digest({"weights": weights_sha, "evals": inputs, "paper": [vars(r) for r in recipe.paper_results]})
    table = markdown_table(rows)
    if run.derived_done("report", report_inputs, out / "results.md"):
        run.record("report", "skipped", "results.json and results.md are up to date")
    else:
        write_json(out / "results.json", {"recipe": recipe.name, "run": str(out), "weights_sha256": weights_sha,
                                          "rows": rows, "results": measured,
                                          "eval_files": {k: f"eval/{k}.json" for k in measured}})
        (out / "results.md").write_text(table)
        run.mark("report", report_inputs)
        run.record("report", "ran", f"wrote {out / 'results.json'} and {out / 'results.md'}")
    run.log(f"\n{recipe.name}: our results beside the paper's\n\n{table}")
    return table, report_inputs


def _card(recipe: Recipe, out: Path, run: _Run, table: str, report_inputs: str, repo_id: str,
          weights_sha: str) -> str:
    """Stage 5: the model card with the measured model-index; returns its digest."""
    from .export import read_encoder_config
    from .hub import CARD_NAME, EVAL_DIR, build_model_card, load_eval_results

    card_inputs = _digest({"report": report_inputs, "repo": repo_id})
    if run.derived_done("card", card_inputs, out / CARD_NAME):
        run.record("card", "skipped", f"{out / CARD_NAME} is up to date")
        return card_inputs
    config = read_encoder_config(out)
    info = dict(config.get("ssl_zoo") or {})
    info["metrics"] = {**dict(info.get("metrics") or {}),
                       **load_eval_results([out / EVAL_DIR / f"{p.key}.json" for p in recipe.evaluation],
                                           weights_sha, strict=True)}
    card = build_model_card({**config, "ssl_zoo": info}, repo_id, reproduction=table)
    (out / CARD_NAME).write_text(str(card))
    run.mark("card", card_inputs)
    run.record("card", "ran", f"wrote {out / CARD_NAME} (model-index for {repo_id})")
    return card_inputs


def _push(recipe: Recipe, out: Path, run: _Run, push: str, push_inputs: str, endpoint: str | None,
          private: bool) -> None:
    """Stage 6: upload the run folder to the Hub repo ``push`` (once per card and endpoint)."""
    if run.derived_done("push", push_inputs):
        run.record("push", "skipped", f"already pushed to {push} at {run.state.get('pushed', {}).get('commit')}")
        return
    from .hub import push_to_hub

    try:
        info = push_to_hub(out, push, endpoint=endpoint, private=private,
                           commit_message=f"{recipe.name}: `ssl-zoo reproduce` results")
    except _network_errors() as exc:  # the Hub unreachable or refusing the upload
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ReproduceError(f"Pushing {out} to {push} failed ({first_line}); every other stage is done, so the "
                             f"same command retries only the push.") from None
    run.state["pushed"] = {"repo": push, "commit": info.oid, "url": info.commit_url}
    run.mark("push", push_inputs)
    run.record("push", "ran", f"{push} commit {info.oid}")


def _decoder_stage_applies(recipe: Recipe) -> bool:
    args = recipe.method_args
    return recipe.method == "synth" and not args.get("decoder_weights") and int(args.get("decoder_pretrain_epochs",
                                                                                        200)) > 0


def _pretraining(recipe: Recipe, out: Path, run: _Run, result: dict[str, Any], stop_after: str | None,
                 max_steps: int | None, train_kwargs: dict[str, Any]) -> bool:
    """Stages 1-2; False when the pipeline stops here (interrupted, or --stop-after decoder_pretrain)."""
    from .checkpoint import CHECKPOINT_NAME
    from .decoder_pretrain import DECODER_FILE, STAGE_DIR
    from .export import CONFIG_NAME, WEIGHTS_NAME, read_encoder_config

    decoder_file = out / STAGE_DIR / DECODER_FILE
    has_decoder_stage = _decoder_stage_applies(recipe)
    exported = (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file()
    if exported:
        stored = (read_encoder_config(out).get("ssl_zoo") or {}).get("recipe_config") or {}
        if _without_decoder_weights(stored) != _without_decoder_weights(
                trained_recipe_dict(recipe, train_kwargs.get("data"))):
            raise ReproduceError(f"{out} holds an encoder trained with another recipe; choose another --output.")
        if has_decoder_stage:
            run.record("decoder_pretrain", "skipped", f"{decoder_file} exists")
        run.record("pretrain", "skipped", f"{out / WEIGHTS_NAME} exists")
        return True

    if has_decoder_stage:
        if decoder_file.is_file():
            run.record("decoder_pretrain", "skipped", f"{decoder_file} exists")
        elif stop_after == "decoder_pretrain":  # this stage alone, exactly as train() would run it
            from .methods import get_method_class

            _, stopped = get_method_class(recipe.method).prepare_run(recipe, out, resume=True, **train_kwargs)
            if stopped is not None:
                run.record("decoder_pretrain", "interrupted", "run the same command again to continue")
                result["interrupted"] = True
                return False
            run.record("decoder_pretrain", "ran", f"wrote {decoder_file}")
    if stop_after == "decoder_pretrain":
        result["stopped_after"] = "decoder_pretrain"
        run.log("Stopped after decoder_pretrain (--stop-after); run the same command without it to continue.")
        return False

    from .train import train

    decoder_before = decoder_file.is_file()
    resume = (out / CHECKPOINT_NAME).is_file() or (out / STAGE_DIR).is_dir()
    summary = train(recipe, output=out, resume=resume, max_steps=max_steps, **train_kwargs)
    if has_decoder_stage and not decoder_before:
        run.record("decoder_pretrain", "ran" if decoder_file.is_file() else "interrupted", str(decoder_file))
    if summary.get("interrupted"):
        run.record("pretrain", "interrupted", "run the same command again to continue")
        result["interrupted"] = True
        return False
    run.record("pretrain", "ran", f"{summary['step']} steps{' (resumed)' if resume else ''}, "
                                  f"exported {out / WEIGHTS_NAME}")
    return True


def _evaluate(recipe: Recipe, out: Path, run: _Run, weights_sha: str, eval_data: str | None, *, seed: int,
              num_workers: int | None, epochs: int | None, batch_size: int | None
              ) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Stage 3: each declared protocol into RUN/eval/<key>.json; returns metrics and file digests by key."""
    from accelerate import Accelerator

    from .evaluation.cli import run_benchmark
    from .hub import EVAL_DIR

    dataset = eval_dataset_name(recipe, eval_data)
    measured: dict[str, dict[str, float]] = {}
    digests: dict[str, str] = {}
    accelerator = None
    for protocol in recipe.evaluation:
        path = out / EVAL_DIR / f"{protocol.key}.json"
        argv = eval_argv(protocol, out, dataset, eval_data, seed=seed, num_workers=num_workers, epochs=epochs,
                         batch_size=batch_size)
        previous = json.loads(path.read_text()) if path.is_file() else None
        if previous and previous.get("model", {}).get("weights_sha256") == weights_sha \
                and previous.get("reproduce", {}).get("argv") == argv:
            run.record(f"evaluate:{protocol.key}", "skipped", f"{path} measured these weights")
        else:
            args = _eval_namespace(argv, protocol.options)
            accelerator = accelerator or Accelerator()
            previous = run_benchmark(args, accelerator)
            previous["model"]["weights_sha256"] = weights_sha
            previous["model"]["recipe"] = recipe.name
            previous["reproduce"] = {"protocol": protocol.key, "argv": argv}
            if _is_main_process():  # the other processes' records hold no metrics
                write_json(path, previous)
            accelerator.wait_for_everyone()
            shown = ", ".join(f"{k} {v:.2f}" for k, v in previous["metrics"].items() if k != "train_loss")
            run.record(f"evaluate:{protocol.key}", "ran", f"{shown} -> {path}")
        measured[protocol.key] = dict(previous["metrics"])
        digests[protocol.key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return measured, digests


# -------------------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe with declared protocols, e.g. moco_v2_synth_r50_cub "
                                       "(toy: moco_v2_synth_r18_digits)")
    parser.add_argument("--data", default=None, help="training dataset folder (digits recipes need none)")
    parser.add_argument("--eval-data", default=None, help="evaluation dataset folder (default: --data)")
    parser.add_argument("--output", default=None, help="run folder (default runs/RECIPE)")
    parser.add_argument("--push", default=None, metavar="REPO", help="publish the encoder and card to this Hub repo")
    parser.add_argument("--endpoint", default=None,
                        help="Hub endpoint for --push (default HF_ENDPOINT / huggingface.co)")
    parser.add_argument("--private", action="store_true", help="create the --push repo private")
    parser.add_argument("--stop-after", choices=STAGES, default=None,
                        help="stop after this stage (the next invocation continues from there)")
    toy = parser.add_argument_group("scale (a toy run; the defaults are the paper's)")
    toy.add_argument("--epochs", type=int, default=None, help="pre-training epochs")
    toy.add_argument("--max-steps", type=int, default=None, help="stop pre-training after this many optimiser steps")
    toy.add_argument("--batch-size", type=int, default=None, help="pre-training GLOBAL batch")
    toy.add_argument("--eval-epochs", type=int, default=None, help="linear-probe epochs (protocol: 100)")
    toy.add_argument("--eval-batch-size", type=int, default=None, help="evaluation batch (default 256)")
    toy.add_argument("--num-workers", type=int, default=None)
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="recipe override, e.g. --set arch=test_resnet --set decoder_pretrain_epochs=1")


def run_cli(args: argparse.Namespace) -> int:
    from .train import parse_overrides

    try:
        result = reproduce(args.recipe, data=args.data, eval_data=args.eval_data, output=args.output, push=args.push,
                           epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                           eval_epochs=args.eval_epochs, eval_batch_size=args.eval_batch_size,
                           overrides=parse_overrides(args.overrides), seed=args.seed, num_workers=args.num_workers,
                           stop_after=args.stop_after, endpoint=args.endpoint, private=args.private)
    except (SslZooError, ValueError, TypeError, KeyError, OSError) as exc:  # a diverged run exits 1, the rest 2
        return report_user_error(exc, scrub=_scrub)
    from .distributed import leave_together_at_exit

    leave_together_at_exit()  # with several processes: leave gloo together, not first-come
    return 3 if result["interrupted"] else 0


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError and the HTTP client's base error that huggingface_hub raises (httpx or requests, by version)."""
    from huggingface_hub.errors import HfHubHTTPError

    return (OSError, *[c for c in HfHubHTTPError.__mro__[1:] if c.__name__ in ("HTTPError", "RequestException")])


def _scrub(text: str) -> str:
    """The Hub token never appears in an error message."""
    from huggingface_hub import get_token

    token = get_token()
    return text.replace(token, "***") if token else text


__all__ = ["reproduce", "comparison_rows", "markdown_table", "eval_argv", "eval_dataset_name", "ReproduceError",
           "STAGES", "configure_parser", "run_cli"]
