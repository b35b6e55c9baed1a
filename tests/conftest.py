import os
from pathlib import Path

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


# -- a user's own images: real pictures in the layouts users bring (issue 20) -----------------------------------

def _real_pictures():
    """scikit-learn's digit scans (8x8, 0..16) and scikit-image's sample photographs, as uint8 arrays."""
    import numpy as np
    import skimage.data
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = [(digits.images[i] * (255 / 16)).astype(np.uint8) for i in range(len(digits.images))]
    photos = [np.asarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "camera")]
    return digits.target, scans, photos


# (mode, extension) of the flat folder's images, in turn: every mode each format can hold, upper-case names too
FLAT_FORMATS = [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".bmp"), ("I;16", ".tiff"),
                ("L", ".JPG"), ("RGB", ".webp"), ("RGBA", ".webp"), ("P", ".png"), ("I;16", ".png"),
                ("RGB", ".jpeg"), ("L", ".Tif")]
FLAT_SUBFOLDERS = ["", "2019", "2019/summer", "phone/DCIM"]


def _as_mode(rgb, mode):
    """A PIL image of ``rgb`` (H, W, 3 uint8) in ``mode``; I;16 spans the full 16-bit range (x 257)."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(rgb)
    if mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)  # Pillow picks I;16 for uint16
    if mode == "RGBA":
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[: rgb.shape[0] // 4] = 0  # a transparent band: to_rgb composites it on white
        return Image.fromarray(np.dstack([rgb, alpha]))
    if mode == "P":
        return image.convert("P", palette=Image.ADAPTIVE, colors=64)
    return image.convert(mode)


def make_flat_image_folder(root, count: int = 60):
    """``count`` real pictures of mixed sizes (20-90 px, not square), modes (L, RGB, RGBA, P, I;16) and formats
    (png, jpg, webp, bmp, tiff, any case) in nested subfolders, no labels; plus files that are not images."""
    import numpy as np
    from PIL import Image

    _, scans, photos = _real_pictures()
    rng = np.random.default_rng(0)
    for i in range(count):
        mode, ext = FLAT_FORMATS[i % len(FLAT_FORMATS)]
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        if i % 2:
            photo = photos[i % len(photos)]
            y, x = int(rng.integers(0, photo.shape[0] - 128)), int(rng.integers(0, photo.shape[1] - 128))
            crop = photo[y:y + 128, x:x + 128]
            rgb = np.dstack([crop] * 3) if crop.ndim == 2 else crop
        else:
            rgb = np.dstack([scans[i]] * 3)
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.BILINEAR))
        folder = root / FLAT_SUBFOLDERS[i % len(FLAT_SUBFOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        _as_mode(rgb, mode).save(folder / f"img_{i:03d}{ext}")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "2019" / "._img_001.jpg").write_bytes(b"\0\5\26\7")  # a macOS resource fork: hidden, skipped
    return root


def make_class_tree_folder(root, classes: int = 5, per_class: int = 12):
    """Real digit scans as a class-per-folder tree, root/digit_<c>/<j>.png|jpg, 24-40 px, RGB and L."""
    import numpy as np
    from PIL import Image

    targets, scans, _ = _real_pictures()
    for c in range(classes):
        (root / f"digit_{c}").mkdir(parents=True, exist_ok=True)
        for j, idx in enumerate(np.flatnonzero(targets == c)[:per_class]):
            size = 24 + 4 * (j % 5)
            image = Image.fromarray(scans[idx]).resize((size, size), Image.BILINEAR)
            image = image.convert("RGB") if j % 2 else image
            image.save(root / f"digit_{c}" / f"{j:02d}{'.png' if j % 3 else '.jpg'}")
    return root


@pytest.fixture(scope="session")
def flat_image_folder(tmp_path_factory):
    """60 unlabelled real pictures, mixed sizes / modes / formats, nested (make_flat_image_folder)."""
    return make_flat_image_folder(tmp_path_factory.mktemp("flat_images"))


@pytest.fixture(scope="session")
def class_tree_folder(tmp_path_factory):
    """60 real digit scans in 5 class folders of 12 (make_class_tree_folder)."""
    return make_class_tree_folder(tmp_path_factory.mktemp("class_tree"))


@pytest.fixture(scope="module")
def local_hub():
    """tests/hub_server.py's Hub, with huggingface_hub (and so timm) pointed at it for one module. The endpoint
    constants are read once at import, hence patched here rather than set in the environment."""
    import sys
    from pathlib import Path

    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import HubServer

    disable_progress_bars()
    with HubServer() as hub, pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "ENDPOINT", hub.url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)  # classic LFS uploads (no Xet in the test server)
        mp.setenv("HF_TOKEN", HUB_TOKEN)
        yield hub


HUB_TOKEN = "hf_test_secret_do_not_print_1234"


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module (the folder is no package; a script that imports a sibling, as
    augment_sweep imports compare, finds it on sys.path)."""
    import importlib.util
    import sys

    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
