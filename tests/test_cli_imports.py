"""`ssl-zoo --help`, `ssl-zoo list` and every `ssl-zoo SUBCOMMAND --help` stay light: they must not import torch,
timm or any other heavy library (seconds of start-up each).

Not timed (benchmarks/cli_speed.py measures); this checks the cause, in a fresh interpreter.
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_zoo
from ssl_zoo.cli import COMMANDS
from ssl_zoo.parsers.eval import PROTOCOLS

REPO = Path(__file__).resolve().parents[1]

# Runs `ssl-zoo ARGV` in a fresh interpreter, checks what it printed, and prints which of MODULES it imported.
PROBE = """
import contextlib, io, sys
import ssl_zoo.cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = ssl_zoo.cli.main(sys.argv[1:])
    except SystemExit as exit_:
        code = exit_.code
assert code == 0, code
{check}
print(",".join(sorted(m for m in {modules!r} if m in sys.modules)))
"""


def imported_by(argv: list[str], check: str, modules: tuple[str, ...]) -> str:
    """Which of ``modules`` `ssl-zoo ARGV` imports (comma-separated, "" for none); ``check`` asserts on ``out``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", PROBE.format(check=check, modules=modules), *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "digits"]])
def test_help_and_list_do_not_import_torch_or_timm(args):
    # it really printed help / recipes
    printed = 'assert "moco" in out.getvalue().lower(), out.getvalue()[:200]'
    imported = imported_by(args, printed, ("torch", "timm", "torchvision"))
    assert imported == "", f"`ssl-zoo {' '.join(args)}` imported {imported}"


# what a parser must not pull in: each of these takes from a few tenths of a second to seconds to import
HEAVY = ("torch", "timm", "accelerate", "torchvision", "sklearn", "matplotlib", "huggingface_hub", "safetensors",
         "numpy", "PIL", "scipy", "pandas")
USAGE = 'assert out.getvalue().startswith("usage: ssl-zoo " + " ".join(sys.argv[1:-1])), out.getvalue()[:200]'

# every row of the table, including rows added later, and each evaluation protocol
HELP_COMMANDS = [[name] for name in COMMANDS] + [["eval", protocol] for protocol in PROTOCOLS]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_subcommand_help_imports_nothing_heavy(command):
    imported = imported_by([*command, "--help"], USAGE, HEAVY)
    assert imported == "", f"`ssl-zoo {' '.join(command)} --help` imported {imported}"


def _parser(*command: str) -> argparse.ArgumentParser:
    """The parser of ``ssl-zoo COMMAND...`` as cli.main builds it."""
    from ssl_zoo.cli import build_parser

    parser = build_parser(list(command))
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _options(*command: str) -> set[str]:
    """The options ``ssl-zoo COMMAND... --help`` shows."""
    return {flag for action in _parser(*command)._actions for flag in action.option_strings
            if action.help is not argparse.SUPPRESS}


def test_eval_protocol_help_lists_only_that_protocols_options():
    knn, linear, transfer, crop = (_options("eval", p) for p in ("knn", "linear", "transfer", "crop-robustness"))
    assert {"--k", "--temperature", "--chunk-size", "--model", "--holdout"} <= knn
    assert not knn & {"--epochs", "--lr", "--milestones", "--grid-lr", "--crop-scales", "--split-file"}
    assert {"--epochs", "--lr", "--milestones", "--cached-features"} <= linear
    assert not linear & {"--k", "--grid-lr", "--crop-scales", "--head", "--save-model"}
    assert {"--grid-lr", "--grid-wd", "--val-fraction"} <= transfer and not transfer & {"--lr", "--k"}
    assert {"--crop-scales", "--head", "--no-center", "--lr"} <= crop and "--grid-lr" not in crop


def test_eval_namespace_is_the_same_for_every_protocol():
    # the runners, _validate and `ssl-zoo reproduce` read any attribute, whichever protocol parsed the line
    from ssl_zoo.cli import build_parser

    spaces = {p: vars(build_parser(["eval"]).parse_args(["eval", p, "--model", "m"])) for p in PROTOCOLS}
    keys = {p: set(ns) for p, ns in spaces.items()}
    assert all(k == keys["linear"] for k in keys.values()), keys
    # k: None until the run clamps the default (20, 200) to the bank (evaluation.metrics.clamp_k)
    assert spaces["linear"]["k"] is None and spaces["knn"]["milestones"] == [60, 80]
    assert spaces["knn"]["nesterov"] is True and spaces["knn"]["center"] is True
    assert spaces["transfer"]["lr"] is None and spaces["linear"]["grid_lr"] == [0.001, 0.01, 0.1]
    with pytest.raises(ssl_zoo.errors.UsageError, match="unrecognized arguments: --k"):
        build_parser(["eval"]).parse_args(["eval", "linear", "--model", "m", "--k", "5"])


def test_benchmark_script_parser_takes_its_protocols_options(capsys):
    from ssl_zoo.evaluation.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"], protocol="knn")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: benchmarks/knn.py") and "--temperature" in out and "--grid-lr" not in out


def test_light_parsers_show_the_constants_of_their_runners():
    from ssl_zoo import decoder_pretrain, hub, model_card
    from ssl_zoo.convert import FILTERS
    from ssl_zoo.evaluation import finetune_cli
    from ssl_zoo.parsers import convert, push
    from ssl_zoo.parsers import decoder_pretrain as decoder_parser

    assert convert.SOURCES == tuple(sorted(FILTERS))
    assert (decoder_parser.DEFAULT_EPOCHS, decoder_parser.ADAM_LR) == (decoder_pretrain.DEFAULT_EPOCHS,
                                                                       decoder_pretrain.ADAM_LR)
    assert (push.TRAINING_STATE_DIR, push.EVAL_DIR) == (hub.TRAINING_STATE_DIR, model_card.EVAL_DIR)
    assert finetune_cli.HEAD_NAME == "head.safetensors"


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of the ssl_zoo modules ``path`` imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_evaluation_cli_modules_import_one_way():
    # evaluation.cli runs the finetune protocols; finetune_cli must not import it back (both use .splits)
    evaluation = REPO / "ssl_zoo" / "evaluation"
    assert "ssl_zoo.evaluation.finetune_cli" in _imported_modules(evaluation / "cli.py", "ssl_zoo.evaluation")
    assert "ssl_zoo.evaluation.cli" not in _imported_modules(evaluation / "finetune_cli.py", "ssl_zoo.evaluation")
    assert "ssl_zoo.evaluation.cli" not in _imported_modules(evaluation / "splits.py", "ssl_zoo.evaluation")
    for parser in (REPO / "ssl_zoo" / "parsers").glob("*.py"):  # parsers import no runner
        assert not {m for m in _imported_modules(parser, "ssl_zoo.parsers") if m.startswith("ssl_zoo")} - {
            "ssl_zoo.errors", "ssl_zoo.parsers"}, parser.name


def test_lazy_names_of_the_package_resolve():
    from ssl_zoo.data import create_dataset
    from ssl_zoo.factory import create_backbone, create_method, create_model
    from ssl_zoo.hub import push_to_hub
    from ssl_zoo.methods import register_method

    assert ssl_zoo.create_model is create_model and ssl_zoo.create_method is create_method
    assert ssl_zoo.create_backbone is create_backbone and ssl_zoo.register_method is register_method
    assert ssl_zoo.create_dataset is create_dataset and ssl_zoo.push_to_hub is push_to_hub
    assert all(hasattr(ssl_zoo, name) for name in ssl_zoo.__all__)
    assert set(ssl_zoo.__all__) <= set(dir(ssl_zoo))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ssl_zoo.nope  # noqa: B018
