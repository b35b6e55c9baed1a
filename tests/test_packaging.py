"""The repository's entry points and metadata: `make demo` installs only the package, `make test` adds the test
tools (separate stamps, either order), and the LICENSE file is the Apache-2.0 that pyproject.toml declares."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _dry_run(folder: Path, target: str) -> list[str]:
    """The commands `make TARGET` would run in ``folder`` (make -n runs nothing)."""
    # a fresh make, also when this test runs under `make test` (CI): no inherited MAKEFLAGS / MAKELEVEL, whose
    # "Entering / Leaving directory" lines would frame the output
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    done = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=folder, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_the_package_only_and_make_test_adds_the_test_extras(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    demo = _dry_run(tmp_path, "demo")
    assert any(line.endswith("pip install --quiet -e .") for line in demo), demo
    assert not any("[test]" in line for line in demo), demo
    assert demo[-1].endswith("ssl-zoo demo")

    # after `make demo` (its stamps, newer than pyproject.toml): `make test` installs the extras, nothing else again
    venv = tmp_path / ".venv"
    venv.mkdir()
    time.sleep(1.1)  # make compares modification times at one-second resolution on some file systems
    for stamp in (".torch", ".installed-demo"):
        (venv / stamp).touch()
    test = _dry_run(tmp_path, "test")
    assert [line for line in test if "pip install" in line] == ['.venv/bin/pip install --quiet -e ".[test]"'], test
    assert test[-1].endswith("python -m pytest -q") and any("mypy" in line for line in test)

    # after both: neither installs again; `make demo` still runs the demo
    (venv / ".installed-test").touch()
    assert not any("pip install" in line for line in _dry_run(tmp_path, "test") + _dry_run(tmp_path, "demo"))


def test_license_file_is_the_apache_2_0_pyproject_declares() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and "Copyright 2026 ssl_zoo contributors" in text
    assert "[yyyy]" not in text
    # the code's license is not the weights': the README keeps saying the official weights are non-commercial
    readme = (REPO / "README.md").read_text()
    assert "CC-BY-NC 4.0" in readme and "Apache-2.0" in readme
