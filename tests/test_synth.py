"""The synth add-on, step by step (METHODS.md "synth"): each test fails on a wrong implementation."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from ssl_zoo.losses import info_nce
from ssl_zoo.methods import get_method_class
from ssl_zoo.methods.synth import (
    FeatureDecoder,
    SynthPairs,
    gradcam_vector,
    load_decoder_weights_,
    low_variance,
    noise_stds,
    perturb,
)


def tiny_encoder():
    return timm.create_model("test_resnet", num_classes=0)


def moco_synth(**kw):
    args = dict(image_size=32, base_args={"queue_size": 64, "proj_dim": 16}, bank_size=12,
                decoder_channels=(16, 8, 8, 8, 8))
    args.update(kw)
    return SynthPairs(tiny_encoder(), **args)


def views(method, batch=4, size=32):
    return [torch.randn(batch, 3, size, size) for _ in method.view_names]


def test_registered_and_wraps_the_base():
    m = moco_synth()
    assert get_method_class("synth") is SynthPairs
    assert m.view_names == ("plain", "crop", "crop")
    assert type(m.base).__name__ == "MoCoV2" and m.encoder is m.base.encoder
    # the encoder is registered once: no aliased tensors in the state dict
    assert not any(k.startswith("encoder.") for k in m.state_dict())
    names = [g["name"] for g in m.parameter_groups()]
    assert names[-1] == "decoder" and len(names) == 2
    with pytest.raises(ValueError, match="variant"):
        moco_synth(variant="bogus")


@pytest.mark.parametrize("dim,size", [(512, 32), (2048, 224), (512, 96), (64, 48)])
def test_decoder_shapes(dim, size):
    d = FeatureDecoder(dim, size, channels=(8, 8, 8, 8, 4))
    assert d(torch.randn(2, dim)).shape == (2, 3, size, size)


def test_gradcam_vector_matches_independent_autograd():
    m = moco_synth().eval()  # eval: no shuffle randomness difference matters, keys are deterministic
    m.base.shuffle_bn = False
    x = torch.randn(3, 3, 32, 32)
    key_view = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        h = m.encoder(x)
        k = F.normalize(m.base.key_projector(m.base.key_encoder(key_view)), dim=1)
    # independent computation: L_gc summed as the mean InfoNCE with the queue, grad by autograd
    h_ref = h.clone().requires_grad_(True)
    loss = info_nce(F.normalize(m.base.projector(h_ref), dim=1), k, m.base.queue, m.base.temperature)
    loss.backward()
    c = torch.relu(-h_ref.detach() * h_ref.grad)
    expected = (c - c.min(1, keepdim=True).values) / (c.max(1, keepdim=True).values - c.min(1, keepdim=True).values)
    before = [p.grad for p in m.parameters()]
    got = m.compute_gradcam(h, [torch.randn(3, 3, 32, 32), key_view])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert got.min() == 0 and torch.allclose(got.max(1).values, torch.ones(3))
    # no parameter gradient is touched by the Grad-CAM pass (the reference's backward set some; compare)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before, [p.grad for p in m.parameters()]))


def test_gradcam_formula_on_a_hand_case():
    h = torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    grad = torch.tensor([[-1.0, 0.5, -2.0, -4.0]])
    # -h*g = [1, -1, -2, 2] -> relu [1, 0, 0, 2] -> minmax [0.5, 0, 0, 1]
    torch.testing.assert_close(gradcam_vector(h, grad), torch.tensor([[0.5, 0.0, 0.0, 1.0]]))


def test_low_variance_mask_selects_planted_dims():
    g = torch.Generator().manual_seed(0)
    d, planted = 64, torch.tensor([3, 17, 40, 41, 63])
    scale = torch.ones(d)
    scale[planted] = 0.01
    bank = torch.randn(4096, d, generator=g) * scale + 5.0  # an offset must not matter
    v_bar, mask, v_hat = low_variance(bank, delta=0.02)
    assert torch.equal(mask.nonzero().flatten(), planted)
    assert torch.isclose(v_bar.norm(), torch.tensor(1.0)) and v_hat.min() == 0 and v_hat.max() == 1


def test_noise_std_follows_the_formulas():
    torch.manual_seed(1)
    d, n = 6, 40000
    c_hat = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0, 0.3])
    v_hat = torch.tensor([0.0, 0.1, 0.9, 0.4, 0.2, 1.0])
    mask = torch.tensor([True, True, False, True, False, False])
    sg, sv = 0.7, 0.4
    std_gc, std_var = noise_stds("full", n, d, c_hat=c_hat.expand(n, d), v_hat=v_hat, mask=mask,
                                 sigma_gc=sg, sigma_var=sv)
    h = torch.full((n, d), 2.0)
    eps = perturb(h, std_gc, std_var) - h
    expected = ((sg * (1 - c_hat)) ** 2 + (sv * (1 - v_hat) * mask) ** 2).sqrt()
    torch.testing.assert_close(eps.std(0), expected, rtol=0.03, atol=0.005)
    torch.testing.assert_close(eps.mean(0), torch.zeros(d), rtol=0, atol=0.02)
    # variants switch the terms on and off
    gc_only, var_zero = noise_stds("gradcam", 2, d, c_hat=c_hat.expand(2, d), v_hat=v_hat, mask=mask,
                                   sigma_gc=sg, sigma_var=sv)
    assert var_zero.abs().sum() == 0 and torch.allclose(gc_only[0], sg * (1 - c_hat))
    gc_zero, var_only = noise_stds("lowvar", 2, d, c_hat=None, v_hat=v_hat, mask=mask, sigma_gc=sg, sigma_var=sv)
    assert gc_zero.abs().sum() == 0 and torch.allclose(var_only[0], sv * (1 - v_hat) * mask)
    rnd, _ = noise_stds("random", 2, d, c_hat=None, v_hat=v_hat, mask=mask, sigma_gc=sg, sigma_var=sv)
    assert torch.allclose(rnd, torch.full((2, d), sg))


def test_no_gradient_from_pair_loss_into_decoder_and_rec_reaches_encoder():
    m = moco_synth()
    parts = m.compute_losses(views(m))
    parts["loss_pair"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.decoder.parameters())
    enc_grad_pair = [p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None]
    assert enc_grad_pair and sum(enc_grad_pair) > 0  # L_pair trains the encoder
    m.zero_grad(set_to_none=True)
    parts["loss_rec"].backward()
    assert sum(p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None) > 0
    assert sum(p.grad.abs().sum() for p in m.decoder.parameters() if p.grad is not None) > 0


def test_total_loss_and_output_dict():
    m = moco_synth(alpha=0.3, beta=0.7)
    torch.manual_seed(3)
    v = views(m)
    torch.manual_seed(3)
    out = m(v)
    expected = out["loss_base"] + 0.3 * out["loss_rec"] + 0.7 * out["loss_pair"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    for key in ("loss_base", "loss_rec", "loss_pair", "lowvar_share", "noise_std", "loss_infonce"):
        assert key in out and torch.isfinite(out[key])
    assert 0 <= out["lowvar_share"] <= 1


def test_bank_replaces_its_oldest_batch():
    m = moco_synth(bank_size=12)
    batches = [torch.full((4, m.num_features), float(i)) for i in range(4)]
    for b in batches[:3]:
        m.update_bank(b)
    assert int(m.bank_count) == 12 and torch.equal(m.bank[:, 0], torch.tensor([0.] * 4 + [1.] * 4 + [2.] * 4))
    m.update_bank(batches[3])  # the oldest batch (0) goes, the others stay
    assert torch.equal(m.bank[:, 0], torch.tensor([3.] * 4 + [1.] * 4 + [2.] * 4))
    assert int(m.bank_ptr) == 4 and int(m.bank_count) == 12
    m2 = moco_synth(bank_size=12)
    m2.update_bank(batches[0])
    assert m2.filled_bank().shape == (4, m.num_features)  # variance only over filled rows


def test_bank_and_queue_survive_state_dict():
    m = moco_synth()
    m(views(m))
    state = m.state_dict()
    assert "bank" in state and "bank_count" in state and "base.queue" in state
    m2 = moco_synth()
    m2.load_state_dict(state)
    assert torch.equal(m2.bank, m.bank) and int(m2.bank_count) == int(m.bank_count)


@pytest.mark.parametrize("variant", ["gradcam", "lowvar", "random"])
def test_variants_run_and_step_momentum(variant):
    m = moco_synth(variant=variant)
    out = m(views(m))
    out["loss"].backward()
    before = next(m.base.key_encoder.parameters()).clone()
    torch.optim.SGD([p for g in m.parameter_groups() for p in g["params"]], lr=0.5).step()
    m.after_optimizer_step(0.5)
    assert not torch.equal(before, next(m.base.key_encoder.parameters()))


def test_decoder_weights_roundtrip_and_clear_errors(tmp_path):
    from safetensors.torch import save_file

    m = moco_synth()
    save_file(m.decoder.state_dict(), str(tmp_path / "decoder.safetensors"))
    m2 = moco_synth(decoder_weights=str(tmp_path / "decoder.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(m.decoder.state_dict().values(), m2.decoder.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="pretrain-decoder"):
        moco_synth(decoder_weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="do not fit"):
        load_decoder_weights_(FeatureDecoder(m.num_features, 64, (16, 8, 8, 8, 8, 4)), tmp_path)


def test_simsiam_base():
    pytest.importorskip("ssl_zoo.methods.simsiam")
    m = SynthPairs(tiny_encoder(), image_size=32, base="simsiam", base_args={"proj_dim": 32, "pred_hidden_dim": 8},
                   bank_size=8, decoder_channels=(16, 8, 8, 8, 8))
    assert m.view_names == ("plain",) + tuple(m.base.view_names)
    v = views(m)
    c_hat = m.compute_gradcam(m.encoder(v[0]), v[1:])
    assert c_hat.shape == (4, m.num_features) and c_hat.max() <= 1
    out = m(v)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and any(g.get("fix_lr") for g in m.parameter_groups())


def test_shared_gradcam_key_gives_the_same_losses_with_one_key_pass_fewer(monkeypatch):
    """The base reuses the Grad-CAM pair's key: the same loss values as computing it twice, one key pass fewer."""
    import copy

    torch.manual_seed(0)
    new = moco_synth()
    new.base.shuffle_bn = False  # keys are then a deterministic function of the batch
    old = copy.deepcopy(new)
    base_forward = type(old.base).forward
    # the previous computation: the base encodes its key itself, a second key-encoder pass
    monkeypatch.setattr(old.base, "forward", lambda views, gradcam_target=None: base_forward(old.base, views))
    passes = {"new": 0, "old": 0}
    new.base.key_encoder.register_forward_hook(lambda *a: passes.__setitem__("new", passes["new"] + 1))
    old.base.key_encoder.register_forward_hook(lambda *a: passes.__setitem__("old", passes["old"] + 1))
    v = views(new)
    torch.manual_seed(1)
    got = new.compute_losses(v)
    torch.manual_seed(1)
    want = old.compute_losses(v)
    for key in ("loss_base", "loss_rec", "loss_pair"):
        assert torch.equal(got[key], want[key]), key
    assert torch.equal(new.base.queue, old.base.queue)
    assert (passes["new"], passes["old"]) == (1, 2)


def test_a_base_without_the_synth_hooks_is_refused():
    from ssl_zoo.methods import register_method
    from ssl_zoo.methods.base import SSLMethod

    class Plain(SSLMethod):
        def __init__(self, encoder, *, image_size=224):
            super().__init__(encoder)

    register_method("test_plain_base", Plain)
    with pytest.raises(ValueError, match="pair_head, gradcam_target and positive_pair_loss"):
        SynthPairs(tiny_encoder(), image_size=32, base="test_plain_base", bank_size=8,
                   decoder_channels=(16, 8, 8, 8, 8))
