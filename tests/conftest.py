import os

import pytest
import torch

# Two cores are shared by the suite's processes; more threads only thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
