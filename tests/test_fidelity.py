"""Paper fidelity at any process count (issue 10): BatchNorm groups, SyncBN, global batch, weight decay, CIFAR
ResNet, GTSRB paper subset, and MoCo v2 / SimSiam step for step against the papers' Algorithm 1 pseudocode."""
from __future__ import annotations

import copy
import csv
import json
import textwrap
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import make_digit_folder
from torch import nn

import ssl_zoo
from ssl_zoo.batchnorm import CpuSyncBatchNorm, SplitBatchNorm2d, batchnorm_groups, convert_split_batchnorm
from ssl_zoo.optim import build_optimizer, build_param_groups
from ssl_zoo.train import per_process_batch_size

TINY = {"arch": "test_resnet", "model_args": {}}


# -- BatchNorm groups, measured on the statistics the layer really used ------------------------------

def normalised_in_groups(y: torch.Tensor, group_size: int, atol: float = 1e-4) -> bool:
    """True when every strided group of ``group_size`` rows has per-channel mean 0 and variance 1 in ``y``."""
    s = y.shape[0] // group_size  # number of groups; group j = rows j, j + s, j + 2s, ...
    for j in range(s):
        g = y[j::s].transpose(0, 1).reshape(y.shape[1], -1)
        if not (torch.allclose(g.mean(1), torch.zeros(g.shape[0]), atol=atol)
                and torch.allclose(g.var(1, unbiased=False), torch.ones(g.shape[0]), atol=1e-2)):
            return False
    return True


def capture_bn1(module: nn.Module) -> dict:
    seen: dict = {}
    # clone: ReLU follows in place
    module.bn1.register_forward_hook(lambda m, inp, out: seen.update(y=out.detach().clone()))
    return seen


def test_split_batchnorm_normalises_groups_of_the_configured_size_in_one_pass() -> None:
    bn = convert_split_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), group_size=4)[0]
    assert isinstance(bn, SplitBatchNorm2d)
    x = torch.randn(16, 3, 5, 5) * torch.arange(1, 17).view(16, 1, 1, 1)  # groups differ in scale
    y = bn.train()(x)
    assert normalised_in_groups(y, 4)
    assert not normalised_in_groups(y, 2)  # exactly groups of 4: sub-groups are not normalised on their own
    assert not normalised_in_groups(F.batch_norm(x, None, None, training=True), 4)
    # running statistics: the mean of the 4 groups' updates, in plain BatchNorm buffers
    means = torch.stack([x[j::4].mean((0, 2, 3)) for j in range(4)]).mean(0)
    assert torch.allclose(bn.running_mean, 0.1 * means, atol=1e-5)
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(3).state_dict())
    # a batch no larger than a group is plain BatchNorm; eval mode uses the running statistics
    small = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(bn(small), F.batch_norm(small, None, None, bn.weight, bn.bias, True))
    with pytest.raises(ValueError, match="multiple of 4"):
        bn(torch.randn(6, 3, 5, 5))


def test_moco_groups_query_and_key_batches() -> None:
    model = ssl_zoo.create_method("moco_v2_r18_digits", **TINY, queue_size=16, bn_group_size=4)
    assert set(batchnorm_groups(model.encoder).values()) == {"groups of 4"}
    assert set(batchnorm_groups(model.key_encoder).values()) == {"groups of 4"}
    q_seen, k_seen = capture_bn1(model.encoder), capture_bn1(model.key_encoder)
    model.train()
    model([torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)])
    for seen in (q_seen, k_seen):  # the statistics actually used: groups of 4 images (whole-batch BN fails this)
        assert normalised_in_groups(seen["y"], 4) and not normalised_in_groups(seen["y"], 2)
    # the key batch was shuffled before its groups were formed (shuffle-BN)
    one_group = ssl_zoo.create_method("moco_v2_r18_digits", **TINY, queue_size=16, bn_group_size=None)
    assert set(batchnorm_groups(one_group.encoder).values()) == {"per process"}


def test_exported_weights_of_a_split_bn_encoder_load_in_plain_timm() -> None:
    model = ssl_zoo.create_method("moco_v2_r18_digits", **TINY, bn_group_size=4)
    plain = timm.create_model("test_resnet", num_classes=0)
    plain.load_state_dict(model.encoder.state_dict(), strict=True)


# -- two processes: groups per process, SyncBN for SimSiam, the same run as one process -------------------

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.nn.functional as F
    import ssl_zoo
    from accelerate import Accelerator
    from ssl_zoo.batchnorm import CpuSyncBatchNorm, convert_sync_batchnorm
    from ssl_zoo.train import train

    state = Accelerator()  # initialises torch.distributed (gloo, 2 CPU processes)
    out, data = sys.argv[1], sys.argv[2]
    rank = state.process_index
    result = {}

    # BatchNorm groups: 16 images per process, groups of 4 (query and key, after the global shuffle)
    torch.manual_seed(0)
    moco = ssl_zoo.create_method("moco_v2_r18_digits", arch="test_resnet", model_args={}, queue_size=64,
                                 bn_group_size=4).train()
    seen = {}
    for name, enc in (("q", moco.encoder), ("k", moco.key_encoder)):
        enc.bn1.register_forward_hook(lambda m, i, o, name=name: seen.update({name: o.detach().clone()}))
    torch.manual_seed(10 + rank)
    moco([torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)])
    torch.save(seen, f"{out}/groups{rank}.pt")

    # CpuSyncBatchNorm: forward and input gradient equal BatchNorm over both processes' images
    g = torch.Generator().manual_seed(1)
    full = torch.randn(8, 3, 4, 4, generator=g) * 3 + 1
    weights = torch.randn(8, 3, 4, 4, generator=g)
    bn = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), torch.device("cpu"))
    x = full[4 * rank: 4 * rank + 4].clone().requires_grad_(True)
    y = bn(x)
    (y * weights[4 * rank: 4 * rank + 4]).sum().backward()
    torch.save({"y": y.detach(), "grad": x.grad, "running_mean": bn[0].running_mean}, f"{out}/sync{rank}.pt")

    # SimSiam trains with SyncBN (recipe sync_bn=True); its BN running means agree across ranks
    recipe = ssl_zoo.get_recipe("simsiam_r18_digits").with_overrides(
        arch="test_resnet", model_args={}, num_workers=0, sync_bn=True, dataset="imagefolder")
    torch.manual_seed(0)
    simsiam = ssl_zoo.create_method(recipe)
    train(recipe, data=data, method=simsiam, batch_size=16, max_steps=1, output=f"{out}/simsiam",
          progress_bar=False)
    kinds = {type(m).__name__ for m in simsiam.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    torch.save({"kinds": sorted(kinds), "rm": simsiam.encoder.bn1.running_mean.clone(),
                "proj_rm": simsiam.projector[1].running_mean.clone()}, f"{out}/simsiam{rank}.pt")

    # the same recipe on 2 processes as on 1: global batch, lr, steps (MoCo digits, 3 steps)
    r = train("moco_v2_r18_digits", batch_size=16, max_steps=3, output=f"{out}/moco", num_workers=0, seed=0,
              progress_bar=False, log_every=1, overrides={"arch": "test_resnet", "model_args": {}, "queue_size": 64})
""")


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    """64 digit scans (4 classes x 16) as 32 px RGB PNGs in class folders."""
    return make_digit_folder(tmp_path_factory.mktemp("digits64"), per_class=16)


def test_two_processes_keep_groups_sync_simsiam_and_the_one_process_run(tmp_path: Path, digit_folder: Path,
                                                                       launch_two_cpu_processes) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    proc = launch_two_cpu_processes([str(script), str(out), str(digit_folder)], {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # groups of 4 images in each process, in the query and in the (globally shuffled) key encoder
    for rank in (0, 1):
        seen = torch.load(out / f"groups{rank}.pt", weights_only=True)
        for y in seen.values():
            assert y.shape[0] == 16 and normalised_in_groups(y, 4) and not normalised_in_groups(y, 2)

    # SyncBN: each process's output and input gradient are those of one BatchNorm over all 8 images
    g = torch.Generator().manual_seed(1)
    full = (torch.randn(8, 3, 4, 4, generator=g) * 3 + 1).requires_grad_(True)
    weights = torch.randn(8, 3, 4, 4, generator=g)
    ref_bn = nn.BatchNorm2d(3)
    y = ref_bn(full)
    (y * weights).sum().backward()
    for rank in (0, 1):
        got = torch.load(out / f"sync{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["y"], y.detach()[4 * rank: 4 * rank + 4], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["grad"], full.grad[4 * rank: 4 * rank + 4], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["running_mean"], ref_bn.running_mean, atol=1e-6, rtol=1e-5)

    s0, s1 = (torch.load(out / f"simsiam{r}.pt", weights_only=True) for r in (0, 1))
    assert s0["kinds"] == ["CpuSyncBatchNorm"]  # every BatchNorm, encoder and heads
    # each rank saw other images, yet the statistics (hence the running means) are global
    torch.testing.assert_close(s0["rm"], s1["rm"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s0["proj_rm"], s1["proj_rm"], atol=1e-6, rtol=1e-5)

    # one process, same recipe and global batch: the same lr, steps, per-step global batch
    one = ssl_zoo.train.train("moco_v2_r18_digits", batch_size=16, max_steps=3, output=tmp_path / "one",
                              num_workers=0, seed=0, progress_bar=False, log_every=1,
                              overrides={"arch": "test_resnet", "model_args": {}, "queue_size": 64})
    two_cfg = json.loads((out / "moco" / "config.json").read_text())["ssl_zoo"]["train"]
    one_cfg = json.loads((tmp_path / "one" / "config.json").read_text())["ssl_zoo"]["train"]
    for key in ("global_batch", "lr", "total_steps", "steps_per_epoch"):
        assert one_cfg[key] == two_cfg[key], key
    assert (one_cfg["per_process_batch"], two_cfg["per_process_batch"]) == (16, 8)
    lrs = [[r["lr"] for r in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if "loss" in r]
           for d in (tmp_path / "one", out / "moco")]
    assert lrs[0] == lrs[1] and len(lrs[0]) == 3
    # the queue received 16 keys per step in both runs
    queue_ptrs = [int(torch.load(d / "checkpoint.pt", weights_only=True)["model"]["queue_ptr"])
                  for d in (tmp_path / "one", out / "moco")]
    assert queue_ptrs == [48, 48] and one["global_batch"] == 16


def test_global_batch_must_divide() -> None:
    assert per_process_batch_size(256, 8, 1) == 32 and per_process_batch_size(512, 2, 4) == 64
    with pytest.raises(ValueError, match="cannot be split over 3 process"):
        per_process_batch_size(256, 3, 1)


def test_cpu_sync_batchnorm_is_plain_batchnorm_in_one_process() -> None:
    sync = CpuSyncBatchNorm(3)
    plain = nn.BatchNorm2d(3)
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.running_var, plain.running_var)


# -- CIFAR ResNet ------------------------------------------------------------------------------------

def test_cifar_resnet_stem_gives_a_4x4_map_and_loads_in_timm() -> None:
    model = timm.create_model("resnet18_cifar", num_classes=0)  # registered by `import ssl_zoo`
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)
    assert timm.create_model("resnet18", num_classes=0).forward_features(torch.randn(2, 3, 32, 32)).shape[-1] == 1
    encoder = ssl_zoo.create_model("moco_v2_r18_cifar10")
    assert encoder.pretrained_cfg["architecture"] == "resnet18_cifar" and encoder.pretrained_cfg["crop_pct"] == 1.0
    fresh = timm.create_model("resnet18_cifar", num_classes=0, zero_init_last=False)
    fresh.load_state_dict(encoder.state_dict(), strict=True)


def test_cifar_recipes_use_the_cifar_stem_and_the_whole_test_image() -> None:
    for name in ("moco_v2_r18_cifar10", "leoclr_r18_cifar10", "simsiam_r18_cifar10"):
        r = ssl_zoo.get_recipe(name)
        assert r.backbone.arch == "resnet18_cifar" and r.augment.eval_crop_pct == 1.0, name
        assert r.augment.blur_p == 0.0, name  # MoCo CIFAR demo / SimSiam Appendix D: no blur
    from PIL import Image

    from ssl_zoo.transforms import build_view_transform

    image = Image.new("RGB", (32, 32))
    image.putpixel((0, 0), (255, 255, 255))  # a corner pixel survives only a whole-image view
    view = build_view_transform("eval", ssl_zoo.get_recipe("moco_v2_r18_cifar10").augment)(image)
    assert view.shape == (3, 32, 32) and view[0, 0, 0] > view[0, 5, 5]


def test_small_image_moco_recipes_cite_the_official_cifar_demo() -> None:
    r = ssl_zoo.get_recipe("moco_v2_r18_cifar10")
    assert (r.train.batch_size, r.train.base_lr, r.train.lr_batch_denom, r.train.weight_decay) == (512, 0.06, 512, 5e-4)
    a = r.method_args
    assert (a["queue_size"], a["momentum"], a["temperature"], a["bn_group_size"]) == (4096, 0.99, 0.1, 64)
    assert ssl_zoo.get_recipe("leoclr_r18_cifar10").method_args == a
    assert ssl_zoo.get_recipe("moco_v2_r50_in1k").method_args["bn_group_size"] == 32


def test_synth_recipes_use_the_papers_initial_lr_at_batch_128() -> None:
    moco = ssl_zoo.get_recipe("moco_v2_synth_r50_cub").train
    simsiam = ssl_zoo.get_recipe("simsiam_synth_r50_cub").train
    assert moco.base_lr * moco.batch_size / moco.lr_batch_denom == pytest.approx(0.03)
    assert simsiam.base_lr * simsiam.batch_size / simsiam.lr_batch_denom == pytest.approx(0.05)
    assert ssl_zoo.get_recipe("moco_v2_synth_r50_cub").method_args["decoder_pretrain_epochs"] == 200
    assert ssl_zoo.get_recipe("moco_v2_synth_r50_gtsrb").dataset == "gtsrb_paper"


# -- GTSRB as the synth paper uses it ---------------------------------------------------------------------

def make_large_gtsrb(root: Path, per_class_train: int = 115, per_class_test: int = 90) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (120, 30, 30)).save(buf, format="PPM")
    ppm = buf.getvalue()
    base = root / "gtsrb"
    rows = []
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        n = per_class_train + (c % 5) * 10  # unbalanced classes
        for k in range(n):
            (folder / f"{k:05d}.ppm").write_bytes(ppm)
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    for i in range(43 * per_class_test):
        name = f"{i:05d}.ppm"
        (test_dir / name).write_bytes(ppm)
        rows.append([name, 6, 6, 0, 0, 5, 5, i % 43])
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        w.writerows(rows)


def test_gtsrb_paper_subset_sizes_stratified_and_seeded(tmp_path: Path) -> None:
    from collections import Counter

    make_large_gtsrb(tmp_path)
    full = ssl_zoo.create_dataset("gtsrb", tmp_path, "train")
    train = ssl_zoo.create_dataset("gtsrb_paper", tmp_path, "train")
    test = ssl_zoo.create_dataset("gtsrb_paper", tmp_path, "test")
    assert (len(train), len(test)) == (4800, 3750) and len(full) > 4800
    assert "4800 of" in train.split_note and "seed 0" in train.split_note
    again = ssl_zoo.create_dataset("gtsrb_paper", tmp_path, "train")
    assert again.paths == train.paths  # the same images every time
    share_full, share_sub = Counter(full.targets), Counter(train.targets)
    for c in range(43):  # stratified: each class keeps its share (within one image)
        assert abs(share_sub[c] - share_full[c] * 4800 / len(full)) <= 1.0


# -- step for step against the papers' pseudocode (one process, one BatchNorm group) ------------------------

def test_moco_v2_matches_algorithm_1_step_for_step() -> None:
    """MoCo (He et al. 2020) Algorithm 1 with the v2 head, written out in plain torch, vs our module + optimiser."""
    lr, wd, m, t, K = 0.03, 1e-4, 0.99, 0.2, 32
    model = ssl_zoo.create_method("moco_v2_r50_in1k", **TINY, queue_size=K, momentum=m, bn_group_size=None)
    recipe = ssl_zoo.get_recipe("moco_v2_r50_in1k")
    optimizer = build_optimizer(build_param_groups(model, lr, wd, recipe.train.decay_norm_and_bias), recipe)

    # Algorithm 1: f_q, f_k encoders (backbone + MLP head), f_k.params = f_q.params, a queue of K keys
    f_q = nn.Sequential(copy.deepcopy(model.encoder), copy.deepcopy(model.projector))
    f_k = copy.deepcopy(f_q)
    queue = model.queue.clone()  # (K, C); the pseudocode keeps C x K
    ref_opt = torch.optim.SGD(f_q.parameters(), lr=lr, momentum=0.9, weight_decay=wd)

    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x_q, x_k = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
        q = F.normalize(f_q(x_q), dim=1)
        with torch.no_grad():
            k = F.normalize(f_k(x_k), dim=1)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ queue.t()
        logits = torch.cat([l_pos, l_neg], dim=1) / t
        loss = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        with torch.no_grad():
            for p_k, p_q in zip(f_k.parameters(), f_q.parameters()):
                p_k.mul_(m).add_(p_q, alpha=1 - m)
            # enqueue(queue, k); dequeue(queue): the 8 newest keys replace the 8 oldest (a ring buffer)
            queue[(torch.arange(8) + step * 8) % K] = k

        out = model([x_q, x_k])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.after_optimizer_step((step + 1) / 3)
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6), step

    ours_q = nn.Sequential(model.encoder, model.projector)
    ours_k = nn.Sequential(model.key_encoder, model.key_projector)
    for ref, ours in ((f_q, ours_q), (f_k, ours_k)):
        for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    torch.testing.assert_close(model.queue, queue, atol=1e-6, rtol=0)


def test_simsiam_matches_algorithm_1_step_for_step() -> None:
    """SimSiam (Chen & He 2021) Algorithm 1 in plain torch, with the predictor's lr fixed, vs our module + optimiser."""
    lr, wd = 0.05, 1e-4
    model = ssl_zoo.create_method("simsiam_r50_in1k", **TINY, proj_dim=64, pred_hidden_dim=16)
    recipe = ssl_zoo.get_recipe("simsiam_r50_in1k")
    optimizer = build_optimizer(build_param_groups(model, lr, wd, recipe.train.decay_norm_and_bias), recipe)
    f = nn.Sequential(copy.deepcopy(model.encoder), copy.deepcopy(model.projector))
    h = copy.deepcopy(model.predictor)
    ref_opt = torch.optim.SGD([{"params": f.parameters()}, {"params": h.parameters()}], lr=lr, momentum=0.9,
                              weight_decay=wd)

    def D(p, z):  # negative cosine similarity with stop-gradient on z
        return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1).mean()

    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x1, x2 = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
        z1, z2 = f(x1), f(x2)
        p1, p2 = h(z1), h(z2)
        loss = D(p1, z2) / 2 + D(p2, z1) / 2
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

        out = model([x1, x2])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6), step
    ours = [*model.encoder.parameters(), *model.projector.parameters(), *model.predictor.parameters()]
    for a, b in zip([*f.parameters(), *h.parameters()], ours):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("imports", ["import ssl_zoo; import timm", "import timm; import ssl_zoo"])
def test_import_ssl_zoo_lets_plain_timm_load_an_exported_cifar_encoder(imports: str, tmp_path: Path) -> None:
    """`import ssl_zoo` (in either order with timm) is all timm needs for `local-dir:` of a CIFAR-stem export."""
    import subprocess
    import sys

    from ssl_zoo.export import save_encoder

    recipe = ssl_zoo.get_recipe("moco_v2_r18_cifar10")
    encoder = ssl_zoo.create_model(recipe).eval()
    save_encoder(encoder, tmp_path, recipe)
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": encoder(x).detach()}, tmp_path / "io.pt")
    code = textwrap.dedent(f"""
        import sys
        {imports}
        import torch
        model = timm.create_model("local-dir:{tmp_path}", pretrained=True).eval()
        io = torch.load("{tmp_path / 'io.pt'}", weights_only=True)
        assert type(model).__name__ == "CifarResNet", type(model)
        torch.testing.assert_close(model(io["x"]), io["y"], atol=1e-5, rtol=1e-5)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_import_ssl_zoo_alone_imports_neither_torch_nor_timm() -> None:
    import subprocess
    import sys

    code = "import sys, ssl_zoo; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
