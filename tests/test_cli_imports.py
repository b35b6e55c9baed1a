"""`ssl-zoo --help` and `ssl-zoo list` stay light: they must not import torch or timm (seconds of start-up).

Not timed (benchmarks/cli_speed.py measures); this checks the cause, in a fresh interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_zoo

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import contextlib, io, sys
import ssl_zoo.cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = ssl_zoo.cli.main(sys.argv[1:])
    except SystemExit as exit_:
        code = exit_.code
assert code == 0, code
assert "moco" in out.getvalue().lower(), out.getvalue()[:200]  # it really printed help / recipes
print(",".join(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "digits"]])
def test_help_and_list_do_not_import_torch_or_timm(args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"`ssl-zoo {' '.join(args)}` imported {done.stdout.strip()}"


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
