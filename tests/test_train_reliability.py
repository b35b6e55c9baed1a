"""What a user and a scheduler do to a run folder: rerun into it, run twice at once, extend a finished run,
diverge, SIGTERM the process group, stall a rank. Each ends in a one-line error or the documented path,
never in lost work or exported NaN weights.

Same tiny runs as tests/test_train.py: timm's test_resnet, batch 16, a 40-image digits folder (2 steps per epoch).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import CrashAtFourthForward, kill_process_group, make_digit_folder, method_as

from ssl_zoo.checkpoint import load_checkpoint, save_checkpoint
from ssl_zoo.cli import main as cli_main
from ssl_zoo.export import NonFiniteWeightsError, save_encoder
from ssl_zoo.methods.moco import MoCoV2
from ssl_zoo.runfolder import LOCK_NAME, RunFolderError, trim_log
from ssl_zoo.train import resolve_recipe, train

RECIPE = "moco_v2_r18_digits"
TINY = {"queue_size": 64, "arch": "test_resnet", "model_args": {}, "bn_group_size": 8}
RUN = dict(batch_size=16, num_workers=0, progress_bar=False, overrides=TINY)
TINY_CLI = ["--set", "queue_size=64", "--set", "arch=test_resnet", "--set", "model_args={}", "--set", "bn_group_size=8"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """40 real digit scans (4 classes x 10) as 32 px RGB PNGs in class folders."""
    return make_digit_folder(tmp_path_factory.mktemp("digits_folder"), per_class=10)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


# -- 1. run folder ---------------------------------------------------------------------------------------

def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(digit_folder: Path, tmp_path: Path,
                                                                     capsys) -> None:
    out = tmp_path / "run"
    train(RECIPE, data=str(digit_folder), epochs=1, output=out, **RUN)
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "model.safetensors", "log.jsonl")}

    with pytest.raises(RunFolderError, match=r"already holds a run .*--resume.*--overwrite"):
        train(RECIPE, data=str(digit_folder), epochs=1, max_steps=1, output=out, **RUN)
    args = ["train", RECIPE, "--data", str(digit_folder), "--epochs", "1", "--batch-size", "16", "--num-workers",
            "0", "--max-steps", "1", "--output", str(out), *TINY_CLI]
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--overwrite" in err, err
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing touched

    with pytest.raises(RunFolderError, match="contradict"):
        train(RECIPE, data=str(digit_folder), epochs=1, output=out, resume=True, overwrite=True, **RUN)

    # --overwrite replaces the run: the new log holds only the new run's records.
    assert cli_main([*args, "--overwrite", "--log-every", "1"]) == 0
    assert [r["step"] for r in _log(out)] == [1]
    assert load_checkpoint(out)["step"] == 1


def test_two_processes_refuse_a_folder_holding_a_run_together(tmp_path: Path, launch_two_cpu_processes) -> None:
    """Rank 0 decides and tells rank 1, so neither trains and neither waits for the other."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier run")
    (out / "log.jsonl").write_text("")  # empty: nothing to lose, not counted as a run
    proc = launch_two_cpu_processes(["-m", "ssl_zoo.train", RECIPE, "--max-steps", "1", "--batch-size", "8",
                                     "--num-workers", "0", "--output", str(out), *TINY_CLI], timeout=200)
    assert proc.returncode != 0
    errors = {line for line in proc.stderr.splitlines() if line.startswith("error:")}
    assert len(errors) == 1 and "already holds a run (checkpoint.pt);" in errors.pop(), proc.stderr[-3000:]
    assert (out / "checkpoint.pt").read_bytes() == b"an earlier run"


def test_second_process_on_the_same_folder_gets_one_line_naming_the_holder(digit_folder: Path, tmp_path: Path,
                                                                           capsys) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ssl_zoo.runfolder import RunLock\n"
         f"with RunLock({str(out)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = cli_main(["train", RECIPE, "--data", str(digit_folder), "--epochs", "1", "--batch-size", "16",
                         "--num-workers", "0", "--output", str(out), *TINY_CLI])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"in use by process {holder.pid} " in err and LOCK_NAME in err
        assert not (out / "checkpoint.pt").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder is gone, and so is its lock (the kernel drops it with the process): the folder is usable.
    assert train(RECIPE, data=str(digit_folder), epochs=1, max_steps=1, output=out, **RUN)["step"] == 1


def test_extend_a_finished_run_keeps_its_results_and_log(digit_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = dict(data=str(digit_folder), output=out, log_every=1, **RUN)
    first = train(RECIPE, epochs=1, **common)
    assert first["step"] == 2
    final_loss = json.loads((out / "config.json").read_text())["ssl_zoo"]["metrics"]["final_loss"]
    assert final_loss is not None

    # Resuming the finished run (nothing left to do) keeps its final loss instead of exporting None.
    again = train(RECIPE, epochs=1, resume=True, **common)
    assert again["step"] == 2 and again["final"]["loss"] == pytest.approx(final_loss)
    exported = json.loads((out / "config.json").read_text())["ssl_zoo"]["metrics"]
    assert exported["final_loss"] == pytest.approx(final_loss)

    # A temp file left by a process killed in the middle of an atomic write is removed.
    stale = out / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")

    extended = train(RECIPE, epochs=3, resume=True, **common)
    assert extended["step"] == 6 and extended["epoch"] == 3 and not extended["interrupted"]
    assert not stale.exists()
    metrics = json.loads((out / "config.json").read_text())["ssl_zoo"]
    assert metrics["metrics"]["steps"] == 6 and metrics["epochs"] == 3 and metrics["train"]["total_steps"] == 6
    step_records = [r["step"] for r in _log(out) if "loss" in r]
    assert step_records == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in _log(out) if "epoch_loss" in r] == [1, 2, 3]
    # Schedule: from the resume on, the lr follows the cosine of a 3-epoch run (not the 1-epoch run's end).
    fresh = tmp_path / "fresh"
    train(RECIPE, epochs=3, **{**common, "output": fresh})
    lr_of = lambda run: {r["step"]: r["lr"] for r in _log(run) if "loss" in r}  # noqa: E731
    assert [lr_of(out)[s] for s in (3, 4, 5, 6)] == pytest.approx([lr_of(fresh)[s] for s in (3, 4, 5, 6)])

    with pytest.raises(ValueError, match="already at step 6"):
        train(RECIPE, epochs=2, resume=True, **common)


def test_plain_resume_keeps_the_planned_length(digit_folder: Path, tmp_path: Path) -> None:
    """--resume without --epochs / --max-steps continues the first run's plan (never the recipe's 30 epochs)."""
    common = dict(data=str(digit_folder), output=tmp_path, **RUN)
    assert train(RECIPE, epochs=2, max_steps=1, **common)["step"] == 1
    again = train(RECIPE, resume=True, **common)
    assert (again["step"], again["total_steps"]) == (1, 1)
    longer = train(RECIPE, resume=True, max_steps=3, **common)  # epochs (2) kept: 3 of 4 steps
    assert (longer["step"], longer["total_steps"]) == (3, 3)
    assert train(RECIPE, resume=True, **common)["step"] == 3


def test_log_has_no_repeated_steps_after_resuming_from_an_earlier_checkpoint(digit_folder: Path,
                                                                             tmp_path: Path) -> None:
    recipe = resolve_recipe(RECIPE, batch_size=16, epochs=2, overrides={**TINY, "dataset": "imagefolder"})
    common = dict(data=str(digit_folder), epochs=2, output=tmp_path, log_every=1, **RUN)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(RECIPE, method=method_as(CrashAtFourthForward, recipe), **common)
    assert load_checkpoint(tmp_path)["step"] == 2 and 3 in [r["step"] for r in _log(tmp_path)]
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write('{"step": 4, "los')  # and a line torn by the crash
    train(RECIPE, resume=True, **common)
    assert [r["step"] for r in _log(tmp_path) if "loss" in r] == [1, 2, 3, 4]


def test_trim_log_keeps_records_up_to_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "epoch_loss": 1.0}\n{"step": 3}\nnot json\n')
    assert trim_log(log, 2) == 2
    assert log.read_text() == '{"step": 1}\n{"step": 2, "epoch_loss": 1.0}\n'
    assert trim_log(log, 2) == 0 and trim_log(tmp_path / "missing.jsonl", 2) == 0


# -- 2. non-finite weights -----------------------------------------------------------------------------------

class InfRunningVarAt(MoCoV2):
    """After optimiser step 3 a BatchNorm running_var becomes inf; the loss stays finite (train-mode BN)."""

    def after_optimizer_step(self, progress: float) -> None:
        super().after_optimizer_step(progress)
        self.steps_done = getattr(self, "steps_done", 0) + 1
        if self.steps_done == 3:
            bn = next(m for m in self.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))


def test_non_finite_buffer_stops_the_run_and_keeps_the_last_finite_checkpoint(digit_folder: Path,
                                                                              tmp_path: Path) -> None:
    recipe = resolve_recipe(RECIPE, batch_size=16, epochs=3, overrides={**TINY, "dataset": "imagefolder"})
    with pytest.raises(NonFiniteWeightsError, match=r"step 4: \d tensors? \(encoder\.\S*running_var.*\) hold NaN/inf"):
        train(RECIPE, data=str(digit_folder), epochs=3, output=tmp_path, method=method_as(InfRunningVarAt, recipe),
              **RUN)
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


def test_diverging_lr_does_not_export_or_exit_zero(digit_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    # Here the loss is still finite at step 3 while BatchNorm running_var has overflowed to inf
    # (with --max-steps 4 the loss turns NaN at step 4 as well).
    code = cli_main(["train", RECIPE, "--data", str(digit_folder), "--lr", "1e9", "--max-steps", "3",
                     "--batch-size", "16", "--num-workers", "0", "--output", str(out), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 1, err
    errors = [line for line in err.splitlines() if "error:" in line]  # the rest is the progress bar
    assert len(errors) == 1 and errors[0].endswith("--mixed-precision no."), err
    assert "error: Non-finite weights at step 3:" in errors[0] and "running_var" in errors[0]
    assert not (out / "model.safetensors").exists()
    if (out / "checkpoint.pt").exists():  # a checkpoint on disk is a finite one
        state = load_checkpoint(out)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_save_push_refuse_and_load_warns_on_non_finite_tensors(tmp_path: Path, capsys) -> None:
    import timm
    from safetensors.torch import load_file, save_file

    from ssl_zoo.hub import load_state_dict_strict, push_to_hub

    encoder = timm.create_model("test_resnet", num_classes=0)
    good = save_encoder(encoder, tmp_path / "good", architecture="test_resnet")
    state = load_file(good / "model.safetensors")
    name = next(k for k in state if k.endswith("running_var"))

    encoder.state_dict()[name].fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match=f"1 tensor \\({name}\\) hold NaN/inf"):
        save_encoder(encoder, tmp_path / "bad_export", architecture="test_resnet")
    assert not (tmp_path / "bad_export" / "model.safetensors").exists()

    # A folder whose weights were damaged afterwards: push refuses before any network access.
    state[name] = torch.full_like(state[name], float("inf"))
    save_file(state, str(good / "model.safetensors"))
    with pytest.raises(NonFiniteWeightsError, match="Refusing to publish"):
        push_to_hub(good, "org/repo", endpoint="http://127.0.0.1:9")
    assert cli_main(["push", str(good), "--repo", "org/repo", "--endpoint", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN/inf" in err, err

    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        load_state_dict_strict(timm.create_model("test_resnet", num_classes=0), state, source="x")

    # A training checkpoint written before training checked its weights: loading (--resume) warns too.
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": state, "step": 3})
    with pytest.warns(RuntimeWarning, match=f"checkpoint.pt has 1 tensor \\({name}\\) holding NaN/inf"):
        assert load_checkpoint(tmp_path)["step"] == 3


# -- 3. SIGTERM to the process group with data-loader workers ----------------------------------------------

def test_sigterm_to_the_process_group_with_workers_checkpoints_and_exits_3(digit_folder: Path, tmp_path: Path,
                                                                           capsys) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ssl_zoo.train", RECIPE, "--data", str(digit_folder), "--epochs", "1000",
           "--batch-size", "8", "--num-workers", "2", "--log-every", "1", "--output", str(out), *TINY_CLI]
    # Its own process group, like a batch job: the signal reaches the main process and its workers.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        # A second run on the folder, even with --resume, is refused while this one holds it.
        assert cli_main(["train", RECIPE, "--data", str(digit_folder), "--resume", "--output", str(out),
                         *TINY_CLI]) == 2
        assert f"is in use by process {proc.pid} " in capsys.readouterr().err
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 3, stderr[-3000:]
        assert "killed by signal" not in stderr
        saved = load_checkpoint(out)
        assert saved["step"] >= 1 and not (out / "model.safetensors").exists()
        # No worker outlived the run: the group empties (a loaded machine may take a few seconds to reap it).
        deadline = time.monotonic() + 30
        with pytest.raises(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
    finally:
        kill_process_group(proc)


# -- 4. a stalled rank ----------------------------------------------------------------------------------------

STALL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import torch.distributed as dist
    import ssl_zoo
    from ssl_zoo.methods.moco import MoCoV2
    from ssl_zoo.train import main

    class StallingMoCo(MoCoV2):
        # After optimiser step 2, rank 1 hangs (as on a dead file system) until it is killed.
        def after_optimizer_step(self, progress):
            super().after_optimizer_step(progress)
            self.steps_done = getattr(self, "steps_done", 0) + 1
            if self.steps_done == 2 and dist.get_rank() == 1:
                Path(sys.argv[1], "stalled_at").write_text(str(time.time()))
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's SIGTERM ends it
                time.sleep(600)

    ssl_zoo.register_method("moco_stalling", StallingMoCo)
    out = sys.argv[1]
    code = main(["moco_v2_r18_digits", "--set", "method=moco_stalling", "--set", "arch=test_resnet",
                 "--set", "model_args={}", "--set", "queue_size=64", "--batch-size", "8", "--epochs", "1000",
                 "--num-workers", "0", "--output", out, *sys.argv[2:]])
    Path(out, f"rank{dist.get_rank()}_exit").write_text(f"{time.time()} {code}")
    sys.exit(code)
""")


def test_stalled_rank_ends_the_other_within_the_collective_timeout(tmp_path: Path, launch_two_cpu_processes) -> None:
    script = tmp_path / "stall.py"
    script.write_text(STALL_SCRIPT)
    out = tmp_path / "run"
    start = time.monotonic()
    proc = launch_two_cpu_processes([str(script), str(out), "--collective-timeout", "4"], timeout=200)
    wall = time.monotonic() - start
    assert proc.returncode != 0
    stalled_at = float((out / "stalled_at").read_text())
    exit_time, code = (out / "rank0_exit").read_text().split()
    assert code == "1"
    waited = float(exit_time) - stalled_at
    assert 4 <= waited < 60, waited  # the timeout, plus a loaded machine's slack; not torch's 30 minutes
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "waited more than 4 s for the other processes" in lines[0], proc.stderr[-3000:]
    assert "--collective-timeout" in lines[0]
    assert not (out / "rank1_exit").exists()  # the stalled rank never returned: the launcher ended it
    assert wall < 200


def test_resume_with_other_data_is_refused(digit_folder: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    train(RECIPE, data=str(digit_folder), epochs=1, max_steps=1, output=out, **RUN)
    other = tmp_path / "other_images"
    shutil.copytree(digit_folder, other)
    next((other / "class_0").iterdir()).unlink()  # one image fewer
    with pytest.raises(ValueError, match="other data"):
        train(RECIPE, data=str(other), epochs=1, output=out, resume=True, **RUN)
    resumed = train(RECIPE, data=str(digit_folder), epochs=1, output=out, resume=True, **RUN)  # the same data: fine
    assert not resumed["interrupted"]


def test_leave_together_destroys_the_group_and_exit_registration_happens_once(tmp_path, monkeypatch):
    """The command-line entry points leave gloo together at exit (a process that left first could abort with
    "terminate called without an active exception" after its work was done)."""
    import atexit

    import torch.distributed as dist

    from ssl_zoo import distributed

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(distributed, "_LEAVING_AT_EXIT", False)
    distributed.leave_together_at_exit()
    distributed.leave_together_at_exit()
    assert registered == [distributed.leave_together]
    distributed.leave_together()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    assert dist.is_initialized()
    distributed.leave_together()
    assert not dist.is_initialized()
