"""What a measured number needs next to it: the machine it was measured on and the command."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch


def machine_info() -> dict[str, Any]:
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
