"""Every user error of the `ssl-zoo` commands: exit code 2 (1 for a diverged run) and ONE line on stderr.

Table-driven (issue 11 B): each row is a command line that a user can get wrong, the exit code it must give and a
phrase its single line must contain. The rows run in-process through `ssl_zoo.cli.main`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ssl_zoo
from ssl_zoo.cli import main as cli_main

TINY = ["--set", "arch=test_resnet", "--set", "model_args={}", "--num-workers", "0", "--max-steps", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from ssl_zoo.export import save_encoder

    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "a_file").write_text("not a folder")
    (root / "truncated.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    (root / "run_with_garbage").mkdir()
    (root / "run_with_garbage" / "checkpoint.pt").write_bytes(b"garbage, not a checkpoint")
    (root / "bad_config").mkdir()
    (root / "bad_config" / "config.json").write_text("{ not json")
    (root / "bad_config" / "model.safetensors").write_bytes(b"")
    from PIL import Image

    for cls in ("a", "b"):
        (root / "images_with_a_bad_one" / cls).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (32, 32), (60 * j, 20, 200)).save(root / "images_with_a_bad_one" / cls / f"{j}.png")
    (root / "images_with_a_bad_one" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    recipe = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(arch="test_resnet", model_args={})
    save_encoder(ssl_zoo.create_model(recipe), root / "exported", recipe)
    return {"root": root}


def _rows(root: Path) -> list[tuple[str, list[str], int, str]]:
    out = str(root / "out")
    return [
        ("unknown architecture", ["train", "moco_v2_r18_digits", "--set", "arch=no_such_net", "--output", out],
         2, "no_such_net"),
        ("bad model_args", ["train", "moco_v2_r18_digits", "--set", "arch=test_resnet", "--set",
                            "model_args={'no_such_arg': 1}", "--output", out], 2, "no_such_arg"),
        ("convert a truncated safetensors", ["convert", str(root / "truncated.safetensors"), "--source", "timm",
                                             "--out", out], 2, "truncated"),
        ("resume from a garbage checkpoint", ["train", "moco_v2_r18_digits", "--resume",
                                              "--output", str(root / "run_with_garbage"), *TINY], 2, "checkpoint"),
        ("--output is a file", ["train", "moco_v2_r18_digits", "--output", str(root / "a_file"), *TINY],
         2, "a_file"),
        ("--output under a file", ["train", "moco_v2_r18_digits", "--output", str(root / "a_file" / "run"), *TINY],
         2, "a_file"),
        ("queue_size=0", ["train", "moco_v2_r18_digits", "--set", "queue_size=0", "--output", out, *TINY],
         2, "queue_size"),
        ("image_size=0", ["train", "moco_v2_r18_digits", "--set", "image_size=0", "--output", out, *TINY],
         2, "image_size"),
        ("--log-every 0", ["train", "moco_v2_r18_digits", "--log-every", "0", "--output", out, *TINY],
         2, "--log-every"),
        ("--epochs 0", ["train", "moco_v2_r18_digits", "--epochs", "0", "--output", out], 2, "epochs"),
        ("--epochs -1", ["train", "moco_v2_r18_digits", "--epochs", "-1", "--output", out], 2, "epochs"),
        ("momentum=2.0", ["train", "moco_v2_r18_digits", "--set", "momentum=2.0", "--output", out, *TINY],
         2, "momentum"),
        ("an unusable decoder file", ["train", "moco_v2_synth_r18_digits", "--set",
                                      f"decoder_weights={root / 'truncated.safetensors'}", "--output", out, *TINY],
         2, "truncated"),
        ("an uninstalled tracker", ["train", "moco_v2_r18_digits", "--log-with", "no_such_tracker",
                                    "--output", out, *TINY], 2, "no_such_tracker"),
        ("k larger than the bank", ["eval", "knn", "--model", str(root / "exported"), "--k", "100000",
                                    "--num-workers", "0"], 2, "--k"),
        ("k-NN on its own bank", ["eval", "knn", "--model", str(root / "exported"), "--test-split", "train",
                                  "--num-workers", "0"], 2, "itself"),
        ("a model that does not exist", ["eval", "knn", "--model", str(root / "nowhere")], 2, "nowhere"),
        ("an invalid config.json", ["eval", "knn", "--model", str(root / "bad_config"), "--num-workers", "0"],
         2, "config.json"),
        ("a short dataset name", ["datasets", "cars"], 2, "stanford_cars"),
        ("eval meets an unreadable image", ["eval", "knn", "--model", str(root / "exported"), "--dataset",
                                            "imagefolder", "--data", str(root / "images_with_a_bad_one"),
                                            "--holdout", "0.5", "--k", "2", "--num-workers", "0"], 2, "broken.png"),
        ("push to an unreachable Hub", ["push", str(root / "exported"), "--repo", "me/model",
                                        "--endpoint", "http://127.0.0.1:9"], 2, "push"),
    ]


def test_every_user_error_is_one_line_and_exit_2(files, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    failures = []
    for name, argv, code, phrase in _rows(files["root"]):
        if name == "push to an unreachable Hub":
            monkeypatch.delenv("HF_HUB_OFFLINE")
        got = cli_main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        if got != code or len(lines) != 1 or phrase not in lines[0] or "Traceback" in err:
            failures.append(f"{name}: exit {got} (want {code}), stderr {err[-600:]!r}")
        if "weights_only=False" in err:
            failures.append(f"{name}: suggests weights_only=False")
    assert not failures, "\n".join(failures)


def test_eval_skips_unreadable_images_when_asked(files, capsys) -> None:
    root = files["root"]
    argv = ["eval", "knn", "--model", str(root / "exported"), "--dataset", "imagefolder", "--data",
            str(root / "images_with_a_bad_one"), "--holdout", "0.5", "--k", "2", "--num-workers", "0"]
    with pytest.warns(RuntimeWarning, match="broken.png"):
        assert cli_main([*argv, "--skip-bad-images"]) == 0


def test_disk_full_while_checkpointing_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import errno

    from ssl_zoo import checkpoint
    from ssl_zoo.errors import CheckpointError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint"):
        checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.ones(1)})
    assert CheckpointError.exit_code == 2


# One bad input (or more) per `ssl-zoo` subcommand, none of which trains or builds a model: a wrong name, a missing
# folder or file, a bad --set, a bad option. Each must give exit 2 and ONE stderr line (issue 15): user errors derive
# from SslZooError and cli.main turns them, argparse's included, into `error: ...`.
def _subcommand_rows(tmp: Path) -> list[tuple[str, list[str], str]]:
    out, missing = str(tmp / "out"), str(tmp / "missing")
    return [
        ("unknown command", ["trian"], "trian"),
        ("list: no recipe matches", ["list", "no_such_recipe_xyz"], "no_such_recipe_xyz"),
        ("train: unknown recipe", ["train", "moco_v2_r18_digts", "--output", out], "Did you mean moco_v2_r18_digits"),
        ("train: --set without =", ["train", "moco_v2_r18_digits", "--set", "epochs", "--output", out], "--set"),
        ("train: --set unknown key", ["train", "moco_v2_r18_digits", "--set", "epoks=3", "--output", out],
         "Did you mean epochs"),
        ("train: --set wrong type", ["train", "moco_v2_r18_digits", "--set", "epochs=many", "--output", out],
         "epochs"),
        ("train: --set a section to a number", ["train", "moco_v2_r18_digits", "--set", "train=5", "--output", out],
         "'train'=5 has type int; train expects a dict"),
        ("demo: --set a section to a number", ["demo", "--set", "backbone=5", "--output", out],
         "'backbone'=5 has type int; backbone expects a dict"),
        ("train: unknown dataset", ["train", "moco_v2_r18_digits", "--set", "dataset=cifar-10", "--output", out],
         "Did you mean 'cifar10'"),
        ("train: unknown method", ["train", "moco_v2_r18_digits", "--set", "method=mocov2", "--output", out],
         "Did you mean moco_v2"),
        ("train: missing data folder", ["train", "moco_v2_r18_cifar10", "--data", missing, "--output", out],
         "does not exist"),
        ("train: not an integer", ["train", "moco_v2_r18_digits", "--epochs", "many"], "--epochs"),
        ("demo: unknown option", ["demo", "--data", missing], "--data"),
        ("datasets: unknown dataset", ["datasets", "cifar-10"], "Did you mean 'cifar10'"),
        ("eval: unknown protocol", ["eval", "knnn", "--model", "moco_v2_r18_digits"], "knnn"),
        ("eval: unknown model", ["eval", "knn", "--model", "no_such_recipe_xyz"], "no_such_recipe_xyz"),
        ("eval: missing checkpoint", ["eval", "knn", "--model", "moco_v2_r18_digits", "--checkpoint", missing],
         "missing"),
        ("eval: unknown dataset", ["eval", "knn", "--model", "moco_v2_r18_digits", "--dataset", "cifar-10"],
         "Did you mean 'cifar10'"),
        ("pretrain-decoder: unknown recipe", ["pretrain-decoder", "no_such_recipe_xyz"], "no_such_recipe_xyz"),
        ("visualize: missing run folder", ["visualize", missing], "missing"),
        ("reproduce: unknown recipe", ["reproduce", "moco_v2_r18_digts"], "Did you mean moco_v2_r18_digits"),
        ("reproduce: bad --stop-after", ["reproduce", "moco_v2_r18_digits", "--stop-after", "never"], "never"),
        ("push: missing folder", ["push", missing, "--repo", "me/model"], "missing"),
        ("convert: missing checkpoint", ["convert", missing, "--source", "moco", "--out", out], "missing"),
        ("convert: unknown source", ["convert", missing, "--source", "mocco", "--out", out], "mocco"),
        ("embed: missing data folder", ["embed", "--model", "moco_v2_r18_digits", "--data", missing, "--output",
                                        out + ".npy"], "no such folder"),
        ("embed: unknown output format", ["embed", "--model", "moco_v2_r18_digits", "--data", missing, "--output",
                                          out + ".pt"], ".safetensors or .npy"),
        ("plot: not a run folder", ["plot", missing], "log.jsonl"),
        ("neighbors: missing data folder", ["neighbors", "--model", "moco_v2_r18_digits", "--data", missing],
         "no such folder"),
        ("map: unknown method", ["map", "--model", "moco_v2_r18_digits", "--data", missing, "--method", "umapp"],
         "umapp"),
    ]


def test_each_subcommand_refuses_a_bad_input_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = _subcommand_rows(tmp_path)
    from ssl_zoo.cli import COMMANDS

    covered = {argv[0] for _, argv, _ in rows}
    assert set(COMMANDS) <= covered, f"no bad-input row for: {sorted(set(COMMANDS) - covered)}"
    failures = []
    for name, argv, phrase in rows:
        try:
            got: object = cli_main(argv)
        except SystemExit as exc:  # argparse's own exit: a usage block, not one line
            got = f"SystemExit({exc.code})"
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        if got != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or phrase not in lines[0] \
                or "Traceback" in err:
            failures.append(f"{name}: exit {got}, stderr {err[-600:]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["train", "--help"]], ids=" ".join)
def test_a_closed_pipe_ends_quietly_with_141(argv: list[str]) -> None:
    # `ssl-zoo list | head -1`: the reader is gone before everything is written. Closing our end of the pipe
    # before the child writes makes that certain (with `head` it depends on the output's size and the timing).
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # type: ignore[union-attr]
    err = child.stderr.read().decode()  # type: ignore[union-attr]
    # 141 = 128 + SIGPIPE, as for a Unix tool; argparse's --help swallows a failed write itself and exits 0
    assert child.wait(timeout=120) == (0 if "--help" in argv else 141), err
    assert err == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
