"""Adversarial probes of issue 21, goals 2, 3, 5 and 6 (results bound to their weights and data; cards that
say what happened and what works; downloads that keep nothing unverified; validated configs).

Table-driven: each row is ``Probe(name, provoke, must_hold)``. ``provoke(ctx)`` does the adversarial thing and
returns what it observed (a dict); ``must_hold(observed)`` is the property that must hold. Extend the table
with a new row; shared set-up lives in the ``ctx`` fixture (a tiny exported encoder, a URL server, tmp dirs).
"""
from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from url_server import FileServer  # noqa: E402

REPO_ROOT = Path(__file__).parents[1]
TINY = {"arch": "test_resnet", "model_args": {}, "queue_size": 64, "bn_group_size": 8, "warmup_epochs": 0.0}


@dataclass(frozen=True)
class Probe:
    name: str
    provoke: Callable[[Any], dict[str, Any]]
    must_hold: Callable[[dict[str, Any]], bool]


class Ctx:
    """Shared set-up of the probes: a tmp folder, a URL server, helpers to export tiny encoders."""

    def __init__(self, tmp: Path, srv: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.srv, self.monkeypatch = tmp, srv, monkeypatch

    def export(self, name: str, arch: str = "test_resnet", model_args: dict | None = None) -> Path:
        import ssl_zoo
        from ssl_zoo.export import save_encoder

        recipe = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(arch=arch, model_args=model_args or {})
        torch.manual_seed(0)
        encoder = ssl_zoo.create_model(recipe)
        return save_encoder(encoder, self.tmp / name, recipe)

    def eval_knn(self, model: Path, name: str) -> Path:
        from ssl_zoo.cli import main as cli_main

        out = self.tmp / f"{name}.json"
        assert cli_main(["eval", "knn", "--model", str(model), "--k", "5", "--image-size", "32", "--num-workers", "0",
                         "--batch-size", "128", "--output", str(out)]) == 0
        return out


def one_line_error(call: Callable[[], Any]) -> dict[str, Any]:
    """What ``call`` raised: type, message, whether it is one line and an SslZooError."""
    from ssl_zoo.errors import SslZooError

    start = time.monotonic()
    try:
        value = call()
    except BaseException as exc:  # noqa: BLE001  (the probe records whatever happens)
        return {"raised": type(exc).__name__, "message": str(exc), "one_line": "\n" not in str(exc),
                "user_error": isinstance(exc, SslZooError), "seconds": time.monotonic() - start}
    return {"raised": None, "value": value, "seconds": time.monotonic() - start}


# -- goal 2: every result is bound to what it measured ---------------------------------------------------

def eval_records_binding(ctx: Ctx) -> dict[str, Any]:
    from ssl_zoo.data.fingerprint import splits_fingerprint
    from ssl_zoo.weights import build_model, local_source, read_state_dict, sha256_file, state_dict_sha256

    model = ctx.export("bound")
    result = json.loads(ctx.eval_knn(model, "bound").read_text())
    loaded = build_model(local_source(model)).state_dict()
    return {"model": result["model"], "dataset": result["dataset"], "protocol": result["protocol"],
            "file_sha": sha256_file(model / "model.safetensors"),
            "state_sha": state_dict_sha256(read_state_dict(model / "model.safetensors")),
            "loaded_state_sha": state_dict_sha256(loaded),
            "fingerprint": splits_fingerprint("digits", None, ["train", "test"]),
            "split": result["model_index"]["knn_top1_k5"]["split"],
            "mi_protocol": result["model_index"]["knn_top1_k5"].get("protocol")}


def push_result(ctx: Ctx, edit: Callable[[dict], dict]) -> dict[str, Any]:
    """`ssl-zoo push --results F` of an edited copy of a real result, to an endpoint nobody listens on: a refusal
    must come before any network access, in one line."""
    from ssl_zoo.cli import main as cli_main

    model = ctx.export("pushed")
    real = json.loads(ctx.eval_knn(model, "pushed").read_text())
    edited = ctx.tmp / "edited.json"
    edited.write_text(json.dumps(edit(real)))
    err = io.StringIO()
    ctx.monkeypatch.setattr(sys, "stderr", err)
    code = cli_main(["push", str(model), "--repo", "org/probe", "--endpoint", "http://127.0.0.1:9",
                     "--results", str(edited)])
    lines = err.getvalue().strip().splitlines()
    return {"code": code, "lines": lines}


def drop_digests(result: dict) -> dict:
    model = {k: v for k, v in result["model"].items() if k not in ("weights_sha256", "state_dict_sha256")}
    return {**result, "model": model}


def other_digests(result: dict) -> dict:
    return {**result, "model": {**result["model"], "weights_sha256": "0" * 64, "state_dict_sha256": "1" * 64}}


def card_with_results(ctx: Ctx, baseline: bool) -> dict[str, Any]:
    from ssl_zoo.model_card import build_model_card, load_eval_results
    from ssl_zoo.weights import read_state_dict, sha256_file, state_dict_sha256

    model = ctx.export(f"card_{baseline}")
    path = ctx.eval_knn(model, f"card_{baseline}")
    if baseline:
        result = json.loads(path.read_text())
        result["model_index"]["knn_top1_k5"]["baseline"] = {"value": 12.5, "init": "moco_v2_r18_digits seed 0",
                                                            "bn_stats": "recomputed"}
        path.write_text(json.dumps(result))
    weights = model / "model.safetensors"
    metrics = load_eval_results([path], sha256_file(weights), state_dict_sha256=state_dict_sha256(
        read_state_dict(weights)))
    config = json.loads((model / "config.json").read_text())
    config["ssl_zoo"]["metrics"] = metrics
    card = str(build_model_card(config, "org/probe"))
    rows = [line for line in card.splitlines() if line.startswith("| knn_top1_k5 |")]
    return {"rows": rows, "card": card}


# -- goal 3: cards and configs tell what happened and what works -----------------------------------------

def demo_max_steps_card(ctx: Ctx) -> dict[str, Any]:
    from ssl_zoo.demo import run_demo
    from ssl_zoo.model_card import build_model_card

    out = ctx.tmp / "demo"
    run_demo(max_steps=2, output=out, num_workers=0, batch_size=32, progress_bar=False, overrides=dict(TINY))
    config = json.loads((out / "config.json").read_text())
    card = str(build_model_card(config, "org/demo"))
    rows = [line for line in card.splitlines() if line.startswith("| knn20 |")]
    return {"card": card, "progress": config["ssl_zoo"].get("progress", {}), "rows": rows,
            "planned": config["ssl_zoo"]["recipe_config"]["train"]["epochs"]}


def demo_card_holds(o: dict[str, Any]) -> bool:
    p = o["progress"]
    return (f"for {o['planned']} epochs" not in o["card"] and "2 optimiser steps" in o["card"]
            and p.get("steps") == 2 and 0 < p.get("epochs", 0) < 1 and p.get("images_seen") == 64
            and p.get("stop_reason") == "max-steps" and "max-steps" in o["card"]
            and len(o["rows"]) == 1 and "| test |" in o["rows"][0] and "untrained" in o["rows"][0])


def fresh_timm(folder: Path) -> subprocess.CompletedProcess:
    """timm in a process that never imports ssl_zoo (the check is inside the child)."""
    code = ("import sys, timm\n"
            f"m = timm.create_model('local-dir:{folder}', pretrained=True)\n"
            "assert 'ssl_zoo' not in sys.modules, 'ssl_zoo was imported'\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(folder.parent))


def timm_snippet(ctx: Ctx, arch: str, model_args: dict) -> dict[str, Any]:
    from ssl_zoo.model_card import build_model_card

    folder = ctx.export(f"snippet_{arch}", arch=arch, model_args=model_args)
    proc = fresh_timm(folder)
    card = str(build_model_card(json.loads((folder / "config.json").read_text()), "org/snippet"))
    timm_block = card.split("in timm", 1)[1].split("```", 2)[1] if "in timm" in card else ""
    return {"rc": proc.returncode, "stderr": proc.stderr[-500:], "card": card, "timm_block": timm_block}


# -- goal 5: downloads keep nothing unverified -----------------------------------------------------------

def torch_zip_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, buf)
    return buf.getvalue()


def safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.randn(64, 64)})


def url_fetch(ctx: Ctx, name: str, data: bytes, short: int | None = None) -> dict[str, Any]:
    """url_download of ``data`` served under ``name`` (``short``: the server announces the whole length
    and stops after that many bytes, every time). No checksum is published."""
    from huggingface_hub import constants

    from ssl_zoo import hub

    ctx.monkeypatch.setenv("TORCH_HOME", str(ctx.tmp / "torch_home"))
    ctx.monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = f"/probe/{ctx.tmp.name}/{name}"
    ctx.srv.files[path] = data
    if short is not None:
        ctx.srv.short[path] = short
    url = ctx.srv.url(path)
    observed = one_line_error(lambda: hub.url_download(url))
    folder = hub.url_cache_folder(url)
    observed["final_kept"] = (folder / name).exists()
    observed["gets"] = ctx.srv.gets(path)
    return observed


def refused_not_kept(o: dict[str, Any]) -> bool:
    return (o["raised"] is not None and o["user_error"] and o["one_line"] and not o["final_kept"]
            and o["seconds"] < 60)


def import_graph(ctx: Ctx) -> dict[str, Any]:
    """Import edges between ssl_zoo modules (module-level and function-level), and their cycles."""
    root = REPO_ROOT / "ssl_zoo"
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package.split(".")
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return {"edges": edges, "cycles": strongly_connected(edges)}


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in edges:
        if v not in index:
            visit(v)
    return out


# The fetch / weights / publish layer, which must hold no cycle; and the one cycle left elsewhere in the
# package (the recipe registry and its recipe files). A NEW cycle anywhere fails the probe.
LAYER = {"ssl_zoo.download", "ssl_zoo.state_dicts", "ssl_zoo.convert", "ssl_zoo.weights", "ssl_zoo.hub",
         "ssl_zoo.model_card", "ssl_zoo.export", "ssl_zoo.report", "ssl_zoo.errors", "ssl_zoo.data.fingerprint"}
KNOWN_CYCLES_ELSEWHERE = [
    {"ssl_zoo", "ssl_zoo.methods", "ssl_zoo.methods.base", "ssl_zoo.recipe", "ssl_zoo.recipes",
     "ssl_zoo.recipes.digits_textures", "ssl_zoo.recipes.leoclr", "ssl_zoo.recipes.moco", "ssl_zoo.recipes.simclr",
     "ssl_zoo.recipes.simsiam", "ssl_zoo.recipes.synth"},
]  # data <-> loader, decoder_pretrain <-> synth, evaluation.cli <-> finetune_cli: gone (issues 20, 22)


def layers_hold(o: dict[str, Any]) -> bool:
    edges = o["edges"]
    cycles_in_layer = [c for c in o["cycles"] if c & LAYER]
    new_cycles = [c for c in o["cycles"] if not any(c <= known for known in KNOWN_CYCLES_ELSEWHERE)]
    below = {"ssl_zoo.errors"}
    return (not cycles_in_layer and not new_cycles and "ssl_zoo.download" in edges
            and edges["ssl_zoo.download"] <= below
            and "ssl_zoo.weights" in edges["ssl_zoo.hub"] and "ssl_zoo.download" in edges["ssl_zoo.weights"]
            and not edges["ssl_zoo.weights"] & {"ssl_zoo.hub", "ssl_zoo.model_card"})


# -- goal 6: configs are validated -----------------------------------------------------------------------

def load_with_config(ctx: Ctx, name: str, edit: Callable[[dict], None]) -> dict[str, Any]:
    """create_model on an exported folder whose config.json was edited; records every timm.create_model call."""
    import timm

    import ssl_zoo

    folder = ctx.export(name)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    calls: list[tuple] = []
    real = timm.create_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    ctx.monkeypatch.setattr(timm, "create_model", spy)
    observed = one_line_error(lambda: ssl_zoo.create_model(str(folder)))
    observed["timm_calls"] = len(calls)
    return observed


def refused_naming(*words: str) -> Callable[[dict[str, Any]], bool]:
    def holds(o: dict[str, Any]) -> bool:
        return (o["raised"] is not None and o["user_error"] and o["one_line"] and o["timm_calls"] == 0
                and all(w in o["message"] for w in words))
    return holds


def set_key(path: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return edit


PROBES = [
    # goal 2
    Probe("eval result records the weights' digests, data fingerprint, split and protocol", eval_records_binding,
          lambda o: (o["model"].get("weights_sha256") == o["file_sha"]
                     and o["model"].get("state_dict_sha256") == o["state_sha"] == o["loaded_state_sha"]
                     and o["dataset"].get("fingerprint") == o["fingerprint"]
                     and o["dataset"].get("test_split") == "test"
                     and o["protocol"] == "knn" and o["split"] == "test" and bool(o["mi_protocol"]))),
    Probe("push --results refuses a result without a weights digest, in one line",
          lambda ctx: push_result(ctx, drop_digests),
          lambda o: o["code"] == 2 and len(o["lines"]) == 1 and "digest" in o["lines"][0]),
    Probe("push --results refuses a result of other weights, in one line",
          lambda ctx: push_result(ctx, other_digests),
          lambda o: o["code"] == 2 and len(o["lines"]) == 1 and "other weights" in o["lines"][0]),
    Probe("card metric names dataset, split, protocol and shows the untrained baseline",
          lambda ctx: card_with_results(ctx, baseline=True),
          lambda o: len(o["rows"]) == 1 and "| digits | test |" in o["rows"][0] and "k-NN" in o["rows"][0]
          and "12.5" in o["rows"][0] and "BN statistics recomputed" in o["rows"][0]),
    Probe("card metric without a baseline says it was not measured",
          lambda ctx: card_with_results(ctx, baseline=False),
          lambda o: len(o["rows"]) == 1 and "untrained baseline: not measured" in o["rows"][0]),
    # goal 3
    Probe("demo --max-steps 2: the card and config say 2 steps, fractional epochs, why it stopped",
          demo_max_steps_card, demo_card_holds),
    Probe("plain timm architecture: fresh-process timm loads it and the card shows the plain snippet",
          lambda ctx: timm_snippet(ctx, "resnet18", {"layers": [1, 1, 1, 1]}),
          lambda o: o["rc"] == 0 and 'timm.create_model("hf-hub:org/snippet", pretrained=True)' in o["timm_block"]
          and "import ssl_zoo" not in o["timm_block"]),
    Probe("resnet18_cifar: fresh-process timm fails and the card says what to import first",
          lambda ctx: timm_snippet(ctx, "resnet18_cifar", {"layers": [1, 1, 1, 1]}),
          lambda o: o["rc"] != 0 and "Unknown model" in o["stderr"] and "import ssl_zoo" in o["timm_block"]
          and o["timm_block"].index("import ssl_zoo") < o["timm_block"].index("timm.create_model")),
    # goal 5
    Probe("truncated torch zip with an honest length and no checksum is refused, not kept",
          lambda ctx: url_fetch(ctx, "trunc.pth.tar", torch_zip_bytes()[:3000]), refused_not_kept),
    Probe("truncated safetensors with an honest length and no checksum is refused, not kept",
          lambda ctx: url_fetch(ctx, "trunc.safetensors", safetensors_bytes()[:5000]), refused_not_kept),
    Probe("a server announcing the full length and stopping early: bounded retries, one line, nothing kept",
          lambda ctx: url_fetch(ctx, "short.pth.tar", torch_zip_bytes(), short=2000),
          lambda o: refused_not_kept(o) and 1 <= o["gets"] <= 3 and o["raised"] != "RecursionError"),
    Probe("a complete, parseable file without a checksum is kept",
          lambda ctx: url_fetch(ctx, "good.safetensors", safetensors_bytes()),
          lambda o: o["raised"] is None and o["final_kept"] and o["gets"] == 1),
    Probe("imports run download <- weights <- push/card, no cycle in that layer, no new cycle anywhere",
          import_graph, layers_hold),
    # goal 6
    Probe("config model_args checkpoint_path is refused before timm is called",
          lambda ctx: load_with_config(ctx, "cfg_ckpt", set_key("model_args.checkpoint_path", "/etc/passwd")),
          refused_naming("model_args.checkpoint_path")),
    Probe("config model_args pretrained_cfg_overlay with a file is refused",
          lambda ctx: load_with_config(ctx, "cfg_overlay",
                                       set_key("model_args.pretrained_cfg_overlay", {"file": "/etc/passwd"})),
          refused_naming("model_args.pretrained_cfg_overlay")),
    Probe("config pretrained_cfg naming a url or file is refused",
          lambda ctx: load_with_config(ctx, "cfg_url", set_key("pretrained_cfg.file", "/etc/passwd")),
          refused_naming("pretrained_cfg.file")),
    Probe("config architecture of the wrong type is one line naming the key",
          lambda ctx: load_with_config(ctx, "cfg_arch", set_key("architecture", 5)), refused_naming("architecture")),
    Probe("config model_args of the wrong type is one line naming the key",
          lambda ctx: load_with_config(ctx, "cfg_args", set_key("model_args", "drop_rate=0.1")),
          refused_naming("model_args")),
    Probe("config model_args value of the wrong type is one line naming the key",
          lambda ctx: load_with_config(ctx, "cfg_drop", set_key("model_args.drop_rate", "high")),
          refused_naming("model_args.drop_rate")),
    Probe("config with an allowed model_arg loads",
          lambda ctx: load_with_config(ctx, "cfg_ok", set_key("model_args.drop_rate", 0.1)),
          lambda o: o["raised"] is None and o["timm_calls"] == 1),
]


@pytest.fixture(scope="module")
def srv():
    with FileServer() as server:
        yield server


@pytest.fixture
def ctx(tmp_path, srv, monkeypatch):
    return Ctx(tmp_path, srv, monkeypatch)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, ctx: Ctx) -> None:
    observed = probe.provoke(ctx)
    shown = {k: (v if len(repr(v)) < 400 else repr(v)[:400] + "...") for k, v in observed.items()}
    assert probe.must_hold(observed), f"{probe.name}: {shown}"


def test_probe_names_are_unique() -> None:
    assert len({p.name for p in PROBES}) == len(PROBES)
