"""SimSiam against the paper: head layout, loss on fixed tensors, stop-gradient, predictor lr group."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssl_zoo
from ssl_zoo.losses import negative_cosine
from ssl_zoo.methods.simsiam import SimSiam


def tiny_simsiam(**kw):
    kw.setdefault("proj_dim", 64)
    kw.setdefault("pred_hidden_dim", 16)
    return ssl_zoo.create_method("simsiam_r18_digits", arch="test_resnet", image_size=32, **kw)


def test_recipes_follow_the_paper():
    r = ssl_zoo.get_recipe("simsiam_r50_in1k")
    assert (r.train.batch_size, r.train.base_lr, r.train.weight_decay, r.train.epochs) == (512, 0.05, 1e-4, 100)
    assert r.backbone.model_args["zero_init_last"] is True and r.method_args["fix_pred_lr"] is True
    c = ssl_zoo.get_recipe("simsiam_r18_cifar10")
    assert (c.backbone.arch, c.train.epochs, c.train.batch_size, c.train.base_lr, c.train.weight_decay) == (
        "resnet18_cifar", 800, 512, 0.03, 5e-4)
    # Appendix D: no blur, a 2-layer projector with 2048-d output; the whole 32x32 image at test time
    assert c.augment.blur_p == 0.0 and c.augment.eval_crop_pct == 1.0
    assert (c.method_args["proj_layers"], c.method_args["proj_dim"]) == (2, 2048)
    cifar = ssl_zoo.create_method(c)
    lin = [m for m in cifar.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(512, 2048), (2048, 2048)]
    assert isinstance(cifar.projector[-1], nn.BatchNorm1d) and not cifar.projector[-1].affine
    # SyncBatchNorm over all processes, as main_simsiam.py converts the model; wd on every parameter
    assert r.train.sync_bn and c.train.sync_bn and r.train.decay_norm_and_bias
    d, moco = ssl_zoo.get_recipe("simsiam_r18_digits"), ssl_zoo.get_recipe("moco_v2_r18_digits")
    same = ("epochs", "batch_size", "weight_decay", "warmup_epochs")
    assert [getattr(d.train, f) for f in same] == [getattr(moco.train, f) for f in same]
    assert d.backbone.arch == moco.backbone.arch and d.augment == moco.augment and d.train.base_lr == 0.05
    # Weights only for the official ImageNet releases, at their authors' URLs; none for what we did not publish.
    published = [n for n in ssl_zoo.list_models("simsiam*") if ssl_zoo.get_recipe(n).weights.published]
    assert published == ["simsiam_r50_in1k", "simsiam_r50_in1k_bs256"]
    for name in published:
        w = ssl_zoo.get_recipe(name).weights
        assert w.url.startswith("https://dl.fbaipublicfiles.com/simsiam/models/") and not (w.hf_hub_id or w.file)


def test_zero_init_residual_encoder():
    model = tiny_simsiam()
    last_bns = [blk.bn2 for stage in (model.encoder.layer1, model.encoder.layer2) for blk in stage]
    assert last_bns and all(torch.count_nonzero(bn.weight) == 0 for bn in last_bns)


def test_projector_and_predictor_layout():
    model = tiny_simsiam(proj_dim=64, pred_hidden_dim=16)
    d = model.num_features
    proj = [type(m).__name__ for m in model.projector]
    assert proj == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    lin = [m for m in model.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(d, d), (d, d), (d, 64)]
    assert all(m.bias is None for m in lin)  # every Linear is followed by BN
    assert model.projector[-1].affine is False and model.projector[1].affine is True
    pred = [type(m).__name__ for m in model.predictor]
    assert pred == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (model.predictor[0].in_features, model.predictor[0].out_features) == (64, 16)
    assert model.predictor[0].bias is None and model.predictor[3].bias is not None
    assert model.predictor[3].out_features == 64
    h = torch.randn(5, d)
    assert model.project(h).shape == (5, 64) and model.predict(model.project(h)).shape == (5, 64)


def test_loss_matches_hand_computation_on_fixed_tensors():
    model = tiny_simsiam()
    model.eval()  # BN uses running statistics: z, p are fixed functions of the input
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        z1, z2 = model.projector(model.encoder(x1)), model.projector(model.encoder(x2))
        p1, p2 = model.predictor(z1), model.predictor(z2)
        out = model([x1, x2])

    def cos(a, b):
        dot = sum(float(a[j]) * float(b[j]) for j in range(a.shape[0]))
        return dot / (math.sqrt(sum(float(v) ** 2 for v in a)) * math.sqrt(sum(float(v) ** 2 for v in b)))

    d12 = -sum(cos(p1[i], z2[i]) for i in range(4)) / 4
    d21 = -sum(cos(p2[i], z1[i]) for i in range(4)) / 4
    assert out["loss"].item() == pytest.approx(0.5 * d12 + 0.5 * d21, rel=1e-4, abs=1e-6)
    assert out["loss_p1_z2"].item() == pytest.approx(d12, rel=1e-4, abs=1e-6)
    assert out["loss_p2_z1"].item() == pytest.approx(d21, rel=1e-4, abs=1e-6)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_stop_gradient_on_targets():
    model = tiny_simsiam()
    model.train()
    x1, x2 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    got = _grads(model, model([x1, x2])["loss"])

    def reference(detach: bool):
        z1, z2 = model.projector(model.encoder(x1)), model.projector(model.encoder(x2))
        p1, p2 = model.predictor(z1), model.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if detach else (z1, z2)
        return -0.5 * (F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean())

    with_sg = _grads(model, reference(detach=True))
    without_sg = _grads(model, reference(detach=False))
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(got, with_sg))
    # the check is sensitive: letting gradient through the targets changes the encoder's gradient
    assert not all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(got, without_sg))


def test_negative_cosine_detaches_its_target():
    p = torch.randn(3, 8, requires_grad=True)
    z = torch.randn(3, 8, requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize("fix", [True, False])
def test_predictor_is_its_own_fix_lr_group(fix):
    model = tiny_simsiam(fix_pred_lr=fix)
    groups = {g["name"]: g for g in model.parameter_groups()}
    assert groups["predictor"]["fix_lr"] is fix and groups["encoder_projector"]["fix_lr"] is False
    pred_ids = {id(p) for p in model.predictor.parameters()}
    assert {id(p) for p in groups["predictor"]["params"]} == pred_ids
    all_ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_wrong_number_of_views_is_a_clear_error():
    with pytest.raises(ValueError, match="expects 2 views"):
        tiny_simsiam()([torch.randn(2, 3, 32, 32)] * 3)


def test_is_registered_under_simsiam():
    assert isinstance(tiny_simsiam(), SimSiam)


def test_common_loop_keeps_predictor_lr_constant():
    from ssl_zoo.train import build_optimizer, build_param_groups, build_scheduler

    model = tiny_simsiam()
    recipe = model.recipe.with_overrides(warmup_epochs=0.0)
    opt = build_optimizer(build_param_groups(model, 0.1, 5e-4), recipe)
    sched = build_scheduler(opt, recipe, total_steps=10, steps_per_epoch=5)
    pred_ids = {id(p) for p in model.predictor.parameters()}
    for _ in range(6):
        opt.step()
        sched.step()
    for g in opt.param_groups:
        if {id(p) for p in g["params"]} <= pred_ids:
            assert g["lr"] == pytest.approx(0.1)
        else:
            assert g["lr"] < 0.1  # cosine-decayed
    assert any({id(p) for p in g["params"]} <= pred_ids for g in opt.param_groups)
