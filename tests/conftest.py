import os

import pytest
import torch

from ssl_zoo.factory import create_method
from ssl_zoo.methods.moco import MoCoV2

# Two cores are shared by the suite's processes; more threads only thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def launch_two_cpu_processes():
    """Run ``accelerate launch`` with 2 CPU processes (gloo) on a free port: ``run(args, extra_env) -> proc``.

    ``--multi_gpu`` with ACCELERATE_USE_CPU=1 is what really starts 2 processes on a CPU machine
    (``--cpu --num_processes 2`` silently runs one).
    """
    import socket
    import subprocess
    import sys

    def run(args: list[str], extra_env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *args]
        # Its own process group, killed afterwards: a hung or stopped rank never outlives the test.
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            kill_process_group(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    return run


def kill_process_group(proc) -> None:
    """SIGKILL what is left of a ``start_new_session=True`` process and its children, then reap it."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.returncode is None:
        proc.communicate()


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one state per process: start and leave each test without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_digit_folder(root, per_class: int, classes: int = 4):
    """Real scans from scikit-learn's digits as a class-per-folder tree: root/class_<c>/<j>.png, 32 px RGB."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for cls in range(classes):
        (root / f"class_{cls}").mkdir(parents=True, exist_ok=True)
        for j, idx in enumerate(np.flatnonzero(digits.target == cls)[:per_class]):
            img = (digits.images[idx] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(img).resize((32, 32), Image.BILINEAR).convert("RGB")
            image.save(root / f"class_{cls}" / f"{j}.png")
    return root


def method_as(cls, recipe):
    """The recipe's method, built as ``train()`` builds it (seed 0), with its class swapped for ``cls``."""
    torch.manual_seed(0)  # what train() does before create_method
    method = create_method(recipe)
    method.__class__ = cls
    return method


class CrashAtFourthForward(MoCoV2):
    """Crashes (no checkpoint) in its 4th forward: a run dies between two checkpoints."""

    def forward(self, views):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 4:
            raise RuntimeError("simulated crash")
        return super().forward(views)
