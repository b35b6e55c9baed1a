"""Issue 22: synth and LeOCLR train the same experiment at any process count, and the remaining paper choices.

- synth's L_pair over the global batch: 2 processes (DDP, gloo) = 1 process on the global batch, for MoCo v2-synth
  (BatchNorm groups = the per-process batch) and SimSiam-synth (CpuSyncBatchNorm = one BatchNorm over the global
  batch): every loss, every gradient, the parameters after 3 SGD steps, the feature bank and the queue;
- SyncBN in every SimSiam-based recipe; BatchNorm groups that shrink warn / refuse and are recorded;
- LeOCLR's enqueue policy and the queue's history length; the decoder stage's BatchNorm mode;
- the 32-px evaluation view, LeOCLR's bicubic centre crop, the CIFAR normalisation of the official demo;
- one-way imports between synth and its decoder stage.
"""
from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

import ssl_zoo
from ssl_zoo.errors import UserInputError
from ssl_zoo.recipe import list_models

# -- synth at 2 processes = synth at 1 process ------------------------------------------------------------------

# Run by the 2 processes and by the test itself (the one-process reference). The global batch of each step is
# drawn from a seeded generator; rank r takes rows r*B .. r*B + B - 1. The reference takes the same 2B rows
# interleaved (row 2i + r is rank r's row i): SplitBatchNorm2d's group j holds rows j, j + S, ... of a batch,
# so groups of B images in one process of 2B are exactly the two processes' batches. The Gaussian noise of
# step 4 is drawn for the global batch too, so both runs perturb every sample alike.
COMMON = textwrap.dedent("""
    import timm
    import torch
    import ssl_zoo.methods.synth as synth_module
    from ssl_zoo.methods.synth import SynthPairs

    B, STEPS, DIM = 4, 3, None
    NOISE = {}

    def build(kind):
        torch.manual_seed(0)
        encoder = timm.create_model("test_resnet", num_classes=0)
        if kind == "moco":
            base = dict(base="moco_v2", base_args={"queue_size": 32, "proj_dim": 16, "momentum": 0.99,
                                                    "bn_group_size": B, "shuffle_bn": False})
        else:
            base = dict(base="simsiam", base_args={"proj_dim": 16, "pred_hidden_dim": 8})
        return SynthPairs(encoder, image_size=32, bank_size=3 * 2 * B, decoder_channels=(8, 8, 8, 8, 8),
                          sigma_gc=0.5, sigma_var=0.5, delta=1.0, **base)

    def global_step_data(step, dim):
        g = torch.Generator().manual_seed(100 + step)
        views = [torch.randn(2 * B, 3, 32, 32, generator=g) for _ in range(3)]  # plain, crop, crop
        noise = (torch.randn(2 * B, dim, generator=g), torch.randn(2 * B, dim, generator=g))
        return views, noise

    def interleave(t):
        # rank-ordered rows (rank 0's B, then rank 1's B) -> row 2i + r = rank r's row i
        return t.view(2, B, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    def rank_order(t):
        return t.view(B, 2, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    def fixed_noise_perturb(h, std_gc, std_var):
        eps_gc, eps_var = NOISE["rows"]
        return h + std_gc * eps_gc + std_var * eps_var

    synth_module.perturb = fixed_noise_perturb

    def run(model, rows, ddp=None):
        # 3 SGD steps; returns the logged losses of each step, the gradients of step 0 and the final state
        net = ddp if ddp is not None else model
        params = [p for g in model.parameter_groups() for p in g["params"]]
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
        losses, grads = [], None
        for step in range(STEPS):
            views, noise = global_step_data(step, model.num_features)
            NOISE["rows"] = tuple(rows(n) for n in noise)
            out = net([rows(v) for v in views])
            opt.zero_grad()
            out["loss"].backward()
            if step == 0:
                grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            opt.step()
            model.after_optimizer_step((step + 1) / STEPS)
            losses.append({k: float(out[k]) for k in ("loss", "loss_base", "loss_rec", "loss_pair")})
        return {"losses": losses, "grads": grads,
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
""")

SCRIPT = COMMON + textwrap.dedent("""
    import sys
    from accelerate import Accelerator
    from torch.nn.parallel import DistributedDataParallel
    from ssl_zoo.batchnorm import convert_sync_batchnorm

    state = Accelerator()  # torch.distributed over gloo, 2 CPU processes
    rank, out = state.process_index, sys.argv[1]
    for kind in ("moco", "simsiam"):
        model = build(kind).train()
        if kind == "simsiam":  # what train() does for a sync_bn recipe on CPU processes
            model = convert_sync_batchnorm(model, torch.device("cpu"))
        ddp = DistributedDataParallel(model)
        result = run(model, lambda t: t[rank * B:(rank + 1) * B], ddp)
        torch.save(result, f"{out}/{kind}{rank}.pt")
""")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference (what the report of issue 22 quotes)."""
    return float((a.double() - b.double()).abs().max())


def test_synth_in_two_processes_is_the_one_process_run_of_the_global_batch(tmp_path: Path,
                                                                          launch_two_cpu_processes,
                                                                          monkeypatch) -> None:
    import ssl_zoo.methods.synth as synth_module

    # COMMON replaces synth's perturb by the fixed noise of a 4-image batch; put the real one back afterwards
    monkeypatch.setattr(synth_module, "perturb", synth_module.perturb)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = launch_two_cpu_processes([str(script), str(tmp_path)], {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ns: dict = {}
    exec(COMMON, ns)  # the same builders, data and fixed noise, in this one process
    # float32 in both runs; the 2-process sums run in another order. SimSiam-synth's tiny SyncBN groups make it the
    # more sensitive of the two: in the one-process run alone, a 1e-6 relative change of the initial weights moves
    # its step-0 L_pair by 3e-4 (MoCo v2-synth: 1.6e-4), so its bounds are wider.
    bounds = {"moco": {"loss": 5e-5, "grad": 2e-4, "param": 1e-5, "bank": 1e-4, "queue": 1e-5},
              "simsiam": {"loss": 2e-3, "grad": 1e-3, "param": 5e-4, "bank": 1e-3, "running": 2e-4}}
    for kind in ("moco", "simsiam"):
        ref = ns["run"](ns["build"](kind).train(), ns["interleave"])
        ranks = [torch.load(tmp_path / f"{kind}{r}.pt", weights_only=True) for r in (0, 1)]
        diffs = dict.fromkeys(bounds[kind], 0.0)
        for step, want in enumerate(ref["losses"]):
            got = [r["losses"][step] for r in ranks]
            # L_pair is the global batch's NT-Xent on every process; the other parts are per-process means whose
            # average (what DDP's gradient average optimises) is the global mean
            diffs["loss"] = max(diffs["loss"], *(abs(g["loss_pair"] - want["loss_pair"]) for g in got),
                                abs((got[0]["loss"] + got[1]["loss"]) / 2 - want["loss"]))
        # gradients of step 0 (DDP-averaged; relative to each parameter's largest) and every parameter after 3 steps
        assert set(ranks[0]["grads"]) == set(ref["grads"]) and len(ref["grads"]) > 20
        for r in ranks:
            for n, g in ref["grads"].items():
                diffs["grad"] = max(diffs["grad"], max_diff(r["grads"][n], g) / float(g.abs().max().clamp_min(1e-6)))
                diffs["param"] = max(diffs["param"], max_diff(r["state"][n], ref["state"][n]))
            # the bank (3 global batches) and the queue (3 x 8 keys, the rest its initial rows), in rank order
            diffs["bank"] = max(diffs["bank"], max_diff(
                r["state"]["bank"], torch.cat([ns["rank_order"](b) for b in ref["state"]["bank"].split(8)])))
            assert int(r["state"]["bank_count"]) == 24
            if kind == "moco":
                q_ref = ref["state"]["base.queue"]
                q_ref = torch.cat([*(ns["rank_order"](b) for b in q_ref[:24].split(8)), q_ref[24:]])
                diffs["queue"] = max(diffs["queue"], max_diff(r["state"]["base.queue"], q_ref))
            else:  # SyncBN: the running statistics are the global batch's too
                for n, v in ref["state"].items():
                    if "running_" in n:
                        diffs["running"] = max(diffs["running"], max_diff(r["state"][n], v))
        print(kind, {k: f"{v:.1e}" for k, v in diffs.items()})
        for key, value in diffs.items():
            assert value < bounds[kind][key], (kind, key, value)
    # without the all-gather, rank 0 would have computed another L_pair (2B - 2 negatives instead of 4B - 2)
    model = ns["build"]("moco").train()
    views, noise = ns["global_step_data"](0, model.num_features)
    ns["NOISE"]["rows"] = tuple(n[:ns["B"]] for n in noise)
    local = float(model.compute_losses([v[:ns["B"]] for v in views])["loss_pair"])
    first = torch.load(tmp_path / "moco0.pt", weights_only=True)["losses"][0]["loss_pair"]
    assert abs(local - first) > 1e-2, (local, first)


# -- SyncBN in every SimSiam-based recipe; BatchNorm groups that shrink -----------------------------------------

def test_every_simsiam_based_recipe_uses_syncbn() -> None:
    names = [n for n in list_models() if ssl_zoo.get_recipe(n).method == "simsiam"
             or ssl_zoo.get_recipe(n).method_args.get("base") == "simsiam"]
    assert {"simsiam_synth_r50_cub", "simsiam_r50_cub", "simsiam_r18_digits", "simsiam_r18_photo_patches"} <= set(names)
    assert all(ssl_zoo.get_recipe(n).train.sync_bn for n in names), names


def test_shrinking_batchnorm_groups_warn_once_are_recorded_or_refused(tmp_path: Path, capsys) -> None:
    from ssl_zoo.batchnorm import BatchNormGroupError
    from ssl_zoo.train import train

    tiny = {"arch": "test_resnet", "model_args": {}, "queue_size": 32, "num_workers": 0}
    # bn_group_size 32, but the one process gets 16 images per step: the groups become 16 images
    train("moco_v2_r18_digits", batch_size=16, max_steps=1, output=tmp_path / "warn", progress_bar=False,
          overrides=tiny)
    printed = capsys.readouterr().out
    assert printed.count("BatchNorm groups become 16 images instead of 32") == 1, printed
    cfg = json.loads((tmp_path / "warn" / "config.json").read_text())["ssl_zoo"]["train"]
    assert cfg["bn_group_size"] == 16
    # a large enough batch keeps the recipe's groups, without a warning
    train("moco_v2_r18_digits", batch_size=64, max_steps=1, output=tmp_path / "keep", progress_bar=False,
          overrides=tiny)
    assert "BatchNorm groups become" not in capsys.readouterr().out
    assert json.loads((tmp_path / "keep" / "config.json").read_text())["ssl_zoo"]["train"]["bn_group_size"] == 32
    # a recipe that requires its groups refuses to run, in one line naming the fix
    with pytest.raises(BatchNormGroupError, match="strict_bn_groups.*larger --batch-size"):
        train("moco_v2_r18_digits", batch_size=16, max_steps=1, output=tmp_path / "strict", progress_bar=False,
              overrides={**tiny, "strict_bn_groups": True})
    assert not (tmp_path / "strict" / "model.safetensors").exists()


def test_split_batchnorm_backward_after_a_small_then_a_split_batch() -> None:
    """synth on N processes: B <= bn_group_size images (plain BatchNorm), then its 2B pair batch (split) in the same
    step; the split pass's running-statistics update must not break the first pass's backward."""
    from ssl_zoo.batchnorm import SplitBatchNorm2d

    bn = SplitBatchNorm2d(3, 4)
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    y = bn(x)
    bn(torch.randn(8, 3, 2, 2))  # two groups of 4
    y.sum().backward()
    assert x.grad is not None and int(bn.num_batches_tracked) == 2


def test_effective_group_sizes() -> None:
    from torch import nn

    from ssl_zoo.batchnorm import convert_split_batchnorm, effective_bn_group_size

    split = convert_split_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), 32)
    kw = dict(num_processes=16, global_batch=256, sync_bn=False)
    assert effective_bn_group_size(split, per_process_batch=16, **kw) == (32, 16)  # moco_v2_r50_in1k on 16 GPUs
    assert effective_bn_group_size(split, per_process_batch=32, **{**kw, "num_processes": 8}) == (32, 32)
    plain = nn.Sequential(nn.BatchNorm2d(3))
    # SyncBN: every process's micro-batch; grad_accum 2 halves it
    assert effective_bn_group_size(plain, per_process_batch=64, num_processes=4, global_batch=512,
                                   sync_bn=True) == (512, 256)
    assert effective_bn_group_size(plain, per_process_batch=64, num_processes=4, global_batch=512,
                                   sync_bn=False) == (None, 64)
    assert effective_bn_group_size(nn.Linear(2, 2), per_process_batch=64, **kw) == (None, None)


# -- LeOCLR's queue ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy,history_steps", [("both", 2), ("one", 4)])
def test_leoclr_enqueue_policy_sets_the_queues_history(policy: str, history_steps: int) -> None:
    """K = 16 keys, B = 4 images: both crops' keys (2B a step) span K / 2B = 2 steps, one crop's K / B = 4."""
    kw = {"arch": "test_resnet", "model_args": {}, "queue_size": 16, "shuffle_bn": False, "proj_dim": 8}
    if policy != "both":
        kw["enqueue"] = policy
    model = ssl_zoo.create_method("leoclr_r18_digits", **kw).train()
    assert model.enqueue_policy == policy  # "both" is the default
    keys_of_step = []
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        views = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(3)]
        with torch.no_grad():
            v1, v2 = model.encode_key(views[1]), model.encode_key(views[2])
        keys_of_step.append(torch.cat([v1, v2]) if policy == "both" else v1)
        model(views)
    # the queue holds exactly the keys of the last `history_steps` steps (ring order), nothing older
    ptr = int(model.queue_ptr)
    last_steps = torch.cat(keys_of_step[-history_steps:])  # oldest of them first
    idx = (torch.arange(16) + ptr) % 16  # the queue's oldest row first
    assert last_steps.shape[0] == 16
    torch.testing.assert_close(model.queue[idx], last_steps, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserInputError, match="enqueue must be one of"):
        ssl_zoo.create_method("leoclr_r18_digits", **{**kw, "enqueue": "first"})


# -- the decoder stage's BatchNorm mode (paper B.2) --------------------------------------------------------------

def test_decoder_stage_decodes_the_train_mode_features_of_the_main_stage_and_keeps_the_encoder() -> None:
    from ssl_zoo.batchnorm import SplitBatchNorm2d
    from ssl_zoo.decoder_pretrain import build_pretraining_method
    from ssl_zoo.factory import create_method

    recipe = ssl_zoo.get_recipe("moco_v2_synth_r18_digits").with_overrides(
        arch="test_resnet", model_args={}, decoder_channels=[8, 8, 8, 8, 8],
        base_args={"queue_size": 32, "proj_dim": 16, "bn_group_size": 4})
    torch.manual_seed(0)
    stage = build_pretraining_method(recipe).train()
    torch.manual_seed(0)
    synth = create_method(recipe).train()
    # the same encoder weights and the base's BatchNorm groups (4 images)
    assert {m.group_size for m in stage.encoder.modules() if isinstance(m, SplitBatchNorm2d)} == {4}
    # every encoder parameter frozen, the split layers' new ones too (DDP stops on one that waits for a gradient)
    assert not any(p.requires_grad for p in stage.encoder.parameters())
    x = torch.randn(8, 3, 32, 32)
    before = {k: v.clone() for k, v in stage.encoder.state_dict().items()}
    h_stage = stage.encode(x)
    with torch.no_grad():
        h_main = synth.encoder(x)  # step 1 of the main stage: h = f(x), training mode
        h_eval = synth.encoder.eval()(x)
    torch.testing.assert_close(h_stage, h_main, atol=1e-6, rtol=1e-5)
    assert (h_stage - h_eval).abs().max() > 1e-2  # the old eval-mode features were another distribution
    out = stage([x])
    out["loss"].backward()
    torch.optim.Adam([p for g in stage.parameter_groups() for p in g["params"]], lr=1e-2).step()
    # frozen means frozen: parameters, running statistics and their step counts all unchanged
    for k, v in stage.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.track_running_stats for m in stage.encoder.modules() if hasattr(m, "track_running_stats"))
    simsiam_stage = build_pretraining_method(ssl_zoo.get_recipe("simsiam_synth_r50_cub").with_overrides(
        arch="test_resnet", model_args={}, init=None, decoder_channels=[8, 8, 8, 8, 8]))
    assert not any(isinstance(m, SplitBatchNorm2d) for m in simsiam_stage.modules())  # SimSiam: one group


# -- evaluation views ------------------------------------------------------------------------------------------------

def test_every_32px_recipe_evaluates_the_whole_image() -> None:
    from ssl_zoo.transforms import build_view_transform

    small = [n for n in list_models() if ssl_zoo.get_recipe(n).augment.image_size <= 64]
    assert {"moco_v2_r18_digits", "moco_v2_r18_photo_patches", "simsiam_r18_digits_textures",
            "moco_v2_synth_r18_digits", "leoclr_simclr_r18_digits"} <= set(small)
    assert all(ssl_zoo.get_recipe(n).augment.eval_crop_pct == 1.0 for n in small), small
    image = Image.new("RGB", (32, 32))
    image.putpixel((0, 0), (255, 255, 255))  # a corner pixel survives only a whole-image view
    view = build_view_transform("eval", ssl_zoo.get_recipe("moco_v2_r18_digits").augment)(image)
    assert view.shape == (3, 32, 32) and view[0, 0, 0] > view[0, 5, 5]


def test_leoclr_centre_crop_test_is_bicubic_and_training_stays_bilinear() -> None:
    from torchvision.transforms import v2

    from ssl_zoo.transforms import build_view_transform, eval_transform

    recipe = ssl_zoo.get_recipe("leoclr_r50_in1k")
    assert recipe.augment.interpolation == "bilinear" and recipe.pretrained_cfg()["interpolation"] == "bicubic"
    assert ssl_zoo.get_recipe("moco_v2_r50_in1k").pretrained_cfg()["interpolation"] == "bilinear"
    g = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(300, 400, 3, generator=g) * 255).to(torch.uint8).numpy())
    bicubic = v2.Compose([v2.ToImage(), v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                          v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                          v2.Normalize(recipe.augment.mean, recipe.augment.std)])
    torch.testing.assert_close(build_view_transform("eval", recipe.augment)(image), bicubic(image))
    encoder = ssl_zoo.create_model(recipe.with_overrides(arch="test_resnet", model_args={}))
    torch.testing.assert_close(eval_transform(encoder)(image), bicubic(image))


def test_cifar_normalisation_is_the_official_demos() -> None:
    for name in ("moco_v2_r18_cifar10", "leoclr_r18_cifar10", "simsiam_r18_cifar10", "simclr_r18_cifar10"):
        augment = ssl_zoo.get_recipe(name).augment
        assert augment.mean == (0.4914, 0.4822, 0.4465) and augment.std == (0.2023, 0.1994, 0.2010), name


# -- one-way imports -------------------------------------------------------------------------------------------------

def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports (at any depth of the file: lazy imports count), resolved to absolute names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            prefix = ".".join(base[: len(base) - node.level]) if node.level else ""
            module = ".".join(p for p in (prefix, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_synth_and_its_decoder_stage_import_one_way() -> None:
    root = Path(ssl_zoo.__file__).parent
    stage = _imported_modules(root / "decoder_pretrain.py", "ssl_zoo.decoder_pretrain")
    synth = _imported_modules(root / "methods" / "synth.py", "ssl_zoo.methods.synth")
    decoder = _imported_modules(root / "methods" / "decoder.py", "ssl_zoo.methods.decoder")
    assert "ssl_zoo.methods.synth" not in stage  # the command does not reach into the add-on
    assert "ssl_zoo.methods.decoder" in stage and "ssl_zoo.methods.decoder" in synth  # both use the lower module
    assert not any(m.startswith(("ssl_zoo.decoder_pretrain", "ssl_zoo.methods.synth")) for m in decoder)
    from ssl_zoo.decoder_pretrain import DecoderPretraining
    from ssl_zoo.methods.decoder import FeatureDecoder
    from ssl_zoo.methods.synth import FeatureDecoder as SynthFeatureDecoder

    assert SynthFeatureDecoder is FeatureDecoder and DecoderPretraining.__module__ == "ssl_zoo.methods.decoder"
