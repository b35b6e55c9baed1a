"""Two real processes on CPU (gloo) through `accelerate launch`: DDP keeps the ranks identical and
MoCo's queue receives the keys of both ranks."""
from __future__ import annotations

import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import ssl_zoo
    from ssl_zoo.methods.moco import MoCoV2
    from ssl_zoo.train import train

    class RecordingMoCo(MoCoV2):
        # Keeps this process's own keys (before the all-gather) of the last enqueue.
        def enqueue(self, keys):
            self.last_local_keys = keys.detach().float().clone()
            super().enqueue(keys)

    ssl_zoo.register_method("moco_recording", RecordingMoCo)
    out = sys.argv[1]
    recipe = ssl_zoo.get_recipe("moco_v2_r18_digits").with_overrides(
        method="moco_recording", arch="test_resnet", model_args={}, queue_size=64, num_workers=0)
    torch.manual_seed(0)
    method = ssl_zoo.create_method(recipe)
    result = train(recipe, method=method, batch_size=16, epochs=1, max_steps=3, output=out, seed=0,
                   progress_bar=False)
    rank = torch.distributed.get_rank()
    torch.save({"state": method.state_dict(), "params": [n for n, _ in method.named_parameters()],
                "keys": method.last_local_keys, "world": result["global_batch"]},
               f"{out}/rank{rank}.pt")
""")


def test_two_processes_stay_in_sync_and_share_the_queue(tmp_path: Path, launch_two_cpu_processes) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    proc = launch_two_cpu_processes([str(script), str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world"] == 16  # --batch-size is global: 8 per process x 2 processes
    # Every parameter (online and momentum encoders) and the queue are identical on both ranks. BatchNorm
    # running statistics are per-rank until DDP broadcasts rank 0's at the next forward, as in any DDP run.
    assert len(r0["params"]) > 10
    for key in [*r0["params"], "queue", "queue_ptr"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), f"{key} differs between ranks"

    # The last enqueue wrote rank 0's 8 keys then rank 1's 8 keys, ending at the queue pointer.
    queue, ptr = r0["state"]["queue"], int(r0["state"]["queue_ptr"])
    idx = (torch.arange(ptr - 16, ptr) % queue.shape[0])
    assert not torch.allclose(r0["keys"], r1["keys"])  # the ranks saw different images
    torch.testing.assert_close(queue[idx[:8]], r0["keys"])
    torch.testing.assert_close(queue[idx[8:]], r1["keys"])
    assert (out / "model.safetensors").is_file() and (out / "checkpoint.pt").is_file()
