"""Publish one entry of the zoo (hub/zoo.json) from a run or converted-model folder.

    python hub/publish.py RECIPE --run-dir runs/RECIPE [--metrics knn.json linear.json] [--endpoint URL] [--write]
    python hub/publish.py RECIPE --from-url [--write]          # converted entries: the official release

Checks that the folder was produced for RECIPE (config.json's ssl_zoo.recipe), optionally merges
measured evaluation metrics (benchmark result files, or ``{"knn_top1": 0.91, ...}``) into the published
config.json, pushes to the entry's repo with ssl_zoo.push_to_hub (token from HF_TOKEN or
`hf auth login`), and prints the ``WeightsCfg`` to put in the recipe. ``--write`` records the
commit, sha256 and metrics in zoo.json. For converted entries, ``--from-url`` downloads the recipe's
``weights.url`` (the URL zoo.json records) into the URL cache, verifies it and converts it exactly as
``create_model(RECIPE, pretrained=True)`` does; ``--upstream-file`` converts a local copy instead.
Either way the upstream file's checksums are checked against zoo.json (md5 prefix, sha256) when it
records them, and ``--write`` records its sha256 and md5.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ZOO = Path(__file__).with_name("zoo.json")


def load_zoo(path: Path = ZOO) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def find_entry(zoo: dict[str, Any], recipe: str) -> dict[str, Any]:
    for entry in zoo["entries"]:
        if entry["recipe"] == recipe:
            return entry
    known = ", ".join(e["recipe"] for e in zoo["entries"])
    raise SystemExit(f"publish: {recipe!r} is not in zoo.json (entries: {known}).")


def load_metrics(paths: list[str], model_dir: Path) -> dict[str, Any]:
    """Merge metric files: a benchmark result's ``model_index`` block (refused unless it measured the weights in
    ``model_dir``), or a flat ``{name: value}`` object."""
    from ssl_zoo.hub import EvalResultError, eval_result_metrics, read_state_dict, sha256_file, state_dict_sha256

    weights = model_dir / "model.safetensors"
    digests = {"weights_sha256": sha256_file(weights), "state_dict_sha256": state_dict_sha256(read_state_dict(weights))}

    merged: dict[str, Any] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and "model_index" in data:
            try:  # refuses a result measured on a random-init encoder
                merged.update(eval_result_metrics(data, source=path, **digests))
            except EvalResultError as exc:
                raise SystemExit(f"publish: {exc}") from None
        else:
            merged.update(data)
    return merged


def stage(run_dir: Path, recipe: str, metrics: dict[str, Any] | None, out: Path) -> Path:
    """Copy the exported encoder to ``out`` with the measured metrics merged into config.json."""
    from ssl_zoo.export import CONFIG_NAME, WEIGHTS_NAME, read_encoder_config
    from ssl_zoo.hub import find_model_dir

    model_dir = find_model_dir(run_dir)
    config = read_encoder_config(model_dir)
    made_for = (config.get("ssl_zoo") or {}).get("recipe")
    if made_for != recipe:
        raise SystemExit(f"publish: {model_dir} was produced for recipe {made_for!r}, not {recipe!r}.")
    if metrics:
        config["ssl_zoo"]["metrics"] = {**(config["ssl_zoo"].get("metrics") or {}), **metrics}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_dir / WEIGHTS_NAME, out / WEIGHTS_NAME)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    for name in ("checkpoint.pt", "log.jsonl"):  # kept so --include-training-state can find them
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    return out


def check_upstream(what: str, upstream: dict[str, Any], digests: dict[str, str]) -> None:
    """The upstream file's checksums against the ones zoo.json records (md5 may be a prefix)."""
    if upstream.get("sha256") and upstream["sha256"] != digests["sha256"]:
        raise SystemExit(f"publish: {what} has sha256 {digests['sha256']}, zoo.json records {upstream['sha256']}.")
    if upstream.get("md5") and not digests["md5"].startswith(upstream["md5"]):
        raise SystemExit(f"publish: {what} has md5 {digests['md5']}, zoo.json records {upstream['md5']}.")


def convert_from_url(recipe_name: str, upstream: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """The recipe's official release, downloaded (URL cache), verified and converted as
    ``create_model(recipe, pretrained=True)`` does; returns the converted folder and the upstream
    file's digests (recorded in the folder's config.json)."""
    from ssl_zoo.export import read_encoder_config
    from ssl_zoo.hub import url_weights
    from ssl_zoo.recipe import get_recipe

    recipe = get_recipe(recipe_name)
    w = recipe.weights
    if (w.url, w.source) != (upstream.get("url"), upstream.get("source")):
        raise SystemExit(f"publish: zoo.json's upstream ({upstream.get('url')}, source {upstream.get('source')}) "
                         f"differs from recipe {recipe_name!r}'s weights ({w.url}, source {w.source}); "
                         f"make them agree.")
    folder = url_weights(recipe).parent
    imported = read_encoder_config(folder)["ssl_zoo"]["imported"]
    digests = {"sha256": imported["sha256"], "md5": imported["md5"]}
    check_upstream(w.url, upstream, digests)
    return folder, digests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--run-dir", help="run / model folder holding model.safetensors + config.json")
    parser.add_argument("--upstream-file", help="upstream checkpoint to convert first (converted entries)")
    parser.add_argument("--from-url", action="store_true",
                        help="download, verify and convert the recipe's weights.url (converted entries)")
    parser.add_argument("--metrics", nargs="+", default=[], metavar="JSON",
                        help="measured evaluation metrics to publish: `ssl-zoo eval` / benchmarks/*.py result "
                             "files, or a flat {name: number} object")
    parser.add_argument("--endpoint", default=None, help="Hub endpoint (default HF_ENDPOINT / huggingface.co)")
    parser.add_argument("--include-training-state", action="store_true")
    parser.add_argument("--zoo", default=str(ZOO), help="zoo.json to read (and update with --write)")
    parser.add_argument("--write", action="store_true", help="record the published commit in zoo.json")
    args = parser.parse_args(argv)

    from ssl_zoo.hub import push_to_hub, sha256_file

    zoo_path = Path(args.zoo)
    zoo = load_zoo(zoo_path)
    entry = find_entry(zoo, args.recipe)
    with tempfile.TemporaryDirectory(prefix="ssl_zoo_publish_") as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else None
        upstream_digests = None
        if args.upstream_file or args.from_url:
            upstream = entry.get("upstream") or {}
            if not upstream:
                raise SystemExit(f"publish: {args.recipe} is produced by training, not from an upstream release.")
        if args.from_url:
            run_dir, upstream_digests = convert_from_url(args.recipe, upstream)
        elif args.upstream_file:
            from ssl_zoo.convert import convert_checkpoint
            from ssl_zoo.hub import file_digests

            upstream_digests = file_digests(args.upstream_file)
            check_upstream(args.upstream_file, upstream, upstream_digests)
            run_dir = convert_checkpoint(args.upstream_file, upstream["source"], Path(tmp) / "converted",
                                         recipe=args.recipe)
        if run_dir is None:
            raise SystemExit("publish: pass --run-dir (or --from-url / --upstream-file for converted entries).")
        from ssl_zoo.hub import find_model_dir

        metrics = load_metrics(args.metrics, find_model_dir(run_dir)) or None
        staged = stage(run_dir, args.recipe, metrics, Path(tmp) / "staged")
        info = push_to_hub(staged, entry["repo"], endpoint=args.endpoint,
                           commit_message=f"{args.recipe}: {entry['produced_by']} ({', '.join(entry['commands'][:1])})",
                           include_training_state=args.include_training_state)
        sha = sha256_file(staged / "model.safetensors")
        config = json.loads((staged / "config.json").read_text())
    print(f"Published {args.recipe} to {entry['repo']} at commit {info.oid}")
    print(f"recipe weights: WeightsCfg(hf_hub_id={entry['repo']!r}, revision={info.oid!r}, sha256={sha!r}, ...)")
    if args.write:
        entry["published"] = {"revision": info.oid, "sha256": sha, "metrics": config["ssl_zoo"].get("metrics", {}),
                              "ssl_zoo_version": config["ssl_zoo"].get("version")}
        if upstream_digests:
            entry["upstream"]["sha256"] = upstream_digests["sha256"]
            entry["upstream"]["md5"] = entry["upstream"].get("md5") or upstream_digests["md5"]
        zoo_path.write_text(json.dumps(zoo, indent=2) + "\n")
        print(f"Recorded the commit in {zoo_path}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
