"""The adversarial probe list of issue 21, re-run: one row per probe (how to provoke it, what must hold).

Each probe drives ``ssl-zoo`` in a subprocess (its own process group, killed afterwards) with a wall-clock bound,
so a hang fails the row instead of the suite. To add a probe: write ``provoke(tmp: Path) -> Outcome`` (use
:func:`cli` / :func:`launch` / :func:`torchrun`) and ``holds(o: Outcome) -> None`` (asserts), and append a
``Probe`` row to ``PROBES``. Tiny settings throughout: timm's ``test_resnet``, batch 16, a 40-image digits folder.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import kill_process_group, make_digit_folder  # noqa: E402

RECIPE = "moco_v2_r18_digits"
TINY = ["--batch-size", "16", "--max-steps", "2", "--set", "queue_size=64", "--set", "arch=test_resnet",
        "--set", "model_args={}", "--set", "bn_group_size=8"]
SYNTH = "moco_v2_synth_r18_digits"
SYNTH_TOY = ["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--eval-epochs", "1", "--num-workers", "0",
             "--set", "arch=test_resnet", "--set", "model_args={}", "--set", "bank_size=64",
             "--set", 'base_args={"queue_size": 64, "proj_dim": 16, "temperature": 0.2, "momentum": 0.99}',
             "--set", "decoder_channels=[8, 8, 8, 8, 8]", "--set", "decoder_pretrain_epochs=1"]


@dataclass
class Outcome:
    rc: int | None  # None: still running at the bound (killed)
    out: str
    err: str
    wall: float
    tmp: Path

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def one_error_line(self, *needles: str) -> str:
        """The run's single ``error:`` line, containing every needle, and no traceback anywhere."""
        assert len(self.errors) == 1, self.err[-3000:]
        assert "Traceback" not in self.err, self.err[-3000:]
        for needle in needles:
            assert needle in self.errors[0], self.errors[0]
        return self.errors[0]


def _run(cmd: list[str], tmp: Path, timeout: float, env: dict[str, str] | None = None) -> Outcome:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        out, err, rc = "", "(killed at the time bound)", None
    finally:
        kill_process_group(proc)  # workers or ranks left behind
    return Outcome(rc, out, err, time.monotonic() - t0, tmp)


def cli(tmp: Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None) -> Outcome:
    """``ssl-zoo ARGS`` in ``tmp``."""
    return _run([sys.executable, "-m", "ssl_zoo.cli", *args], tmp, timeout, env)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(tmp: Path, *args: str, timeout: float = 300) -> Outcome:
    """``accelerate launch`` with 2 CPU processes (gloo) of ``python -m ssl_zoo.cli ARGS``."""
    return _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                 _free_port(), "-m", "ssl_zoo.cli", *args], tmp, timeout, {"ACCELERATE_USE_CPU": "1"})


def torchrun(tmp: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> Outcome:
    """``torchrun --nproc_per_node 2`` of ``python -m ssl_zoo.train ARGS`` (no ACCELERATE_USE_CPU unless in env)."""
    env = {**{k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}, **(env or {})}
    return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 _free_port(), "-m", "ssl_zoo.train", *args], tmp, timeout, env)


def folder(tmp: Path) -> Path:
    return make_digit_folder(tmp / "data", per_class=10)


def train(tmp: Path, *extra: str, out: str = "run", timeout: float = 180) -> Outcome:
    return cli(tmp, "train", RECIPE, "--data", "data", "--output", out, "--num-workers", "0", *TINY, *extra,
               timeout=timeout)


# -- probes -----------------------------------------------------------------------------------------

def resume_with_another_seed(tmp: Path) -> Outcome:
    folder(tmp)
    first = train(tmp, "--max-steps", "1")
    assert first.rc == 0, first.err[-3000:]
    return train(tmp, "--resume", "--seed", "7")


def refused_naming(*needles: str) -> Callable[[Outcome], None]:
    def holds(o: Outcome) -> None:
        assert o.rc == 2, (o.rc, o.err[-3000:])
        o.one_error_line(*needles)
    return holds


def resume_with_another_seed_allowed(tmp: Path) -> Outcome:
    folder(tmp)
    assert train(tmp, "--max-steps", "1").rc == 0
    return train(tmp, "--resume", "--seed", "7", "--allow-changed", "seed")


def resumed(o: Outcome) -> None:
    assert o.rc == 0, o.err[-3000:]
    assert "--allow-changed seed" in o.out + o.err  # said, not silent
    assert (o.tmp / "run" / "model.safetensors").is_file()


def resume_after_images_replaced(tmp: Path) -> Outcome:
    data = folder(tmp)
    assert train(tmp, "--max-steps", "1").rc == 0
    # the same names, other pictures: class 1's first scan now shows class 2's first scan
    (data / "class_1" / "0.png").write_bytes((data / "class_2" / "0.png").read_bytes())
    os.utime(data / "class_1" / "0.png", ns=(1, 1))
    return train(tmp, "--resume")


def _bad_image(tmp: Path, kind: str) -> None:
    """40 images of which one is bad: with batch 8 every image is read in the first epoch."""
    data = folder(tmp)
    (data / "class_3" / "9.png").unlink()
    if kind == "text":
        (data / "class_0" / "bad.png").write_text("this is not an image\n")
    else:  # a JPEG cut in the middle of its data
        from PIL import Image
        Image.open(data / "class_1" / "0.png").resize((64, 64)).save(data / "class_1" / "cut.jpg", quality=90)
        raw = (data / "class_1" / "cut.jpg").read_bytes()
        (data / "class_1" / "cut.jpg").write_bytes(raw[: len(raw) // 2])


def bad_image(kind: str, workers: int, *extra: str) -> Callable[[Path], Outcome]:
    def provoke(tmp: Path) -> Outcome:
        _bad_image(tmp, kind)
        return cli(tmp, "train", RECIPE, "--data", "data", "--output", "run", "--num-workers", str(workers),
                   "--batch-size", "8", *TINY[4:], "--epochs", "1", *extra, timeout=120)
    return provoke


def ends_in_one_line_naming(name: str) -> Callable[[Outcome], None]:
    def holds(o: Outcome) -> None:
        assert o.rc == 2, (o.rc, o.wall, o.err[-3000:])
        o.one_error_line(name, "--skip-bad-images")
        assert "DataLoader worker" not in o.err
    return holds


def skipped_and_listed(name: str) -> Callable[[Outcome], None]:
    def holds(o: Outcome) -> None:
        assert o.rc == 0, o.err[-3000:]
        assert any("Skipped 1 unreadable image" in line and name in line for line in (o.out + o.err).splitlines())
        records = [json.loads(line) for line in (o.tmp / "run" / "log.jsonl").read_text().splitlines()]
        assert records[-1].get("skipped_images") == 1, records[-1]
    return holds


def trained_by_two_processes(o: Outcome) -> None:
    assert o.rc == 0, o.err[-4000:]
    assert "2 process(es) x batch 8" in o.out + o.err
    assert "in use by" not in o.err and "Traceback" not in o.err
    assert (o.tmp / "run" / "model.safetensors").is_file()
    config = json.loads((o.tmp / "run" / "config.json").read_text())
    assert config["ssl_zoo"]["train"]["num_processes"] == 2


def torchrun_train(tmp: Path) -> Outcome:
    folder(tmp)
    return torchrun(tmp, RECIPE, "--data", "data", "--output", "run", "--num-workers", "0", *TINY)


def torchrun_forced_off_cpu(tmp: Path) -> Outcome:
    folder(tmp)
    if _has_gpu():
        pytest.skip("on a GPU machine ACCELERATE_USE_CPU=0 is a launch ssl_zoo serves")
    return torchrun(tmp, RECIPE, "--data", "data", "--output", "run", "--num-workers", "0", *TINY,
                    env={"ACCELERATE_USE_CPU": "0"})


def _has_gpu() -> bool:
    import torch
    return torch.cuda.is_available()


def refused_on_every_rank(o: Outcome) -> None:
    assert o.rc not in (0, None), (o.rc, o.err[-3000:])
    errors = set(o.errors)
    assert len(errors) == 1, o.err[-3000:]  # each rank says the same one line
    assert "WORLD_SIZE=2" in errors.pop() and "in use by" not in o.err
    assert not (o.tmp / "run" / "checkpoint.pt").exists()


def accelerate_train(tmp: Path) -> Outcome:
    folder(tmp)
    return launch(tmp, "train", RECIPE, "--data", "data", "--output", "run", "--num-workers", "0", *TINY)


def reproduce_bad_push_id(tmp: Path) -> Outcome:
    return cli(tmp, "reproduce", SYNTH, "--output", "run", "--push", "bad id", *SYNTH_TOY, timeout=120)


def refused_before_any_work(o: Outcome) -> None:
    refused_naming("--push", "bad id")(o)
    assert not (o.tmp / "run" / "model.safetensors").exists()
    assert not (o.tmp / "run" / "decoder_pretrain").exists()
    assert o.wall < 60


def reproduce_digits_folder_twice(tmp: Path) -> Outcome:
    # train/ and test/ splits; 200 training images: the recipe's k-NN protocol asks for k=200
    make_digit_folder(tmp / "data" / "train", per_class=50)
    make_digit_folder(tmp / "data" / "test", per_class=5)
    args = ["reproduce", SYNTH, "--output", "run", "--data", "data", *SYNTH_TOY, "--set", "bank_size=32"]
    first = cli(tmp, *args, "--stop-after", "pretrain", timeout=300)
    assert first.rc == 0, first.err[-3000:]
    return cli(tmp, *args, "--stop-after", "evaluate", timeout=300)


def continued(o: Outcome) -> None:
    assert o.rc == 0, o.err[-3000:]
    events = [json.loads(line) for line in (o.tmp / "run" / "reproduce.jsonl").read_text().splitlines()]
    assert {e["stage"]: e["status"] for e in events}["pretrain"] == "skipped"
    assert any(e["stage"].startswith("evaluate:") and e["status"] == "ran" for e in events)


def reproduce_two_processes(tmp: Path) -> Outcome:
    return launch(tmp, "reproduce", SYNTH, "--output", "run", *SYNTH_TOY, timeout=560)


def reproduced_once(o: Outcome) -> None:
    assert o.rc == 0, o.err[-4000:]
    events = [json.loads(line) for line in (o.tmp / "run" / "reproduce.jsonl").read_text().splitlines()]
    stages = [e["stage"] for e in events]
    assert len(stages) == len(set(stages)), stages  # each stage logged once, by the main process
    assert {"pretrain", "report", "card"} <= set(stages)
    for path in (o.tmp / "run" / "eval").glob("*.json"):
        assert json.loads(path.read_text())["metrics"], path  # no empty record from another process
    assert (o.tmp / "run" / "README.md").is_file()


@dataclass(frozen=True)
class Probe:
    name: str  # the failure the probe looks for
    provoke: Callable[[Path], Outcome]  # what a user does
    holds: Callable[[Outcome], None]  # what must then be true (asserts)
    slow: bool = False  # two processes or a whole reproduction: minutes on a loaded CPU machine


PROBES = [
    Probe("resume --seed 7 on a seed-0 run is refused naming the seed", resume_with_another_seed,
          refused_naming("seed 0 -> 7", "--allow-changed seed")),
    Probe("resume --seed 7 --allow-changed seed continues, and says so", resume_with_another_seed_allowed, resumed),
    Probe("resume after images were replaced in the same folder is refused naming the data",
          resume_after_images_replaced, refused_naming("other data", "fingerprint", "--allow-changed data")),
    Probe("a text file named .png, 0 workers: one line naming it, exit 2", bad_image("text", 0),
          ends_in_one_line_naming("bad.png")),
    Probe("a text file named .png, 2 workers: one line naming it, exit 2, no hang", bad_image("text", 2),
          ends_in_one_line_naming("bad.png")),
    Probe("a truncated JPEG, 2 workers: one line naming it, exit 2, no hang", bad_image("jpeg", 2),
          ends_in_one_line_naming("cut.jpg")),
    Probe("a truncated JPEG, 0 workers: one line naming it, exit 2", bad_image("jpeg", 0),
          ends_in_one_line_naming("cut.jpg")),
    Probe("--skip-bad-images with 2 workers: the run ends, the file is listed and counted in the log",
          bad_image("text", 2, "--skip-bad-images"), skipped_and_listed("bad.png")),
    Probe("reproduce --push 'bad id' is refused before any work", reproduce_bad_push_id, refused_before_any_work),
    Probe("torchrun --nproc_per_node 2 on CPU trains 2 processes and exits cleanly", torchrun_train,
          trained_by_two_processes, slow=True),
    Probe("torchrun whose ranks cannot form one group (ACCELERATE_USE_CPU=0 on CPU) is refused in one line",
          torchrun_forced_off_cpu, refused_on_every_rank, slow=True),
    Probe("accelerate launch with 2 CPU processes trains and exits cleanly", accelerate_train,
          trained_by_two_processes, slow=True),
    Probe("a digits recipe reproduced with --data continues after pre-training", reproduce_digits_folder_twice,
          continued, slow=True),
    Probe("reproduce under accelerate launch with 2 processes: every stage once, no empty record",
          reproduce_two_processes, reproduced_once, slow=True),
]


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path) -> None:
    if probe.slow and os.environ.get("SSL_ZOO_SKIP_SLOW_PROBES"):
        pytest.skip("SSL_ZOO_SKIP_SLOW_PROBES is set")
    probe.holds(probe.provoke(tmp_path))
