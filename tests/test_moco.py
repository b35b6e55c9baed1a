"""MoCo v2 against independent computations: loss, momentum update, queue, stop-gradient, shuffle-BN."""
import math

import pytest
import torch
import torch.nn.functional as F

import ssl_zoo
from ssl_zoo.losses import info_nce
from ssl_zoo.methods.moco import MoCoV2, momentum_update_


def tiny_moco(**kw):
    kw.setdefault("queue_size", 16)
    return ssl_zoo.create_method("moco_v2_r18_digits", arch="test_resnet", model_args={}, image_size=32, **kw)


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    t = 0.2
    expected = 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / t)
        negs = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(5))
        expected += -math.log(pos / (pos + negs))
    expected /= 4
    assert info_nce(q, k, queue, t).item() == pytest.approx(expected, rel=1e-5)


def test_forward_loss_is_infonce_of_query_and_key_against_queue_before_enqueue():
    model = tiny_moco(shuffle_bn=False)
    model.eval()  # BN in eval mode: keys are a deterministic function of the input
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    queue_before = model.queue.clone()
    with torch.no_grad():
        q = F.normalize(model.projector(model.encoder(x1)), dim=1)
        k = F.normalize(model.key_projector(model.key_encoder(x2)), dim=1)
    out = model([x1, x2])
    assert out["loss"].item() == pytest.approx(info_nce(q, k, queue_before, 0.2).item(), rel=1e-5)
    # the keys of this batch were enqueued after the loss was computed
    assert torch.allclose(model.queue[:4], k, atol=1e-6)
    assert int(model.queue_ptr) == 4


def test_symmetric_loss_is_mean_of_both_directions_and_enqueues_both_keys():
    model = tiny_moco(shuffle_bn=False, symmetric=True)
    model.eval()
    x1, x2 = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    queue = model.queue.clone()
    with torch.no_grad():
        q1, q2 = model.encode_query(x1), model.encode_query(x2)
        k1, k2 = model.encode_key(x1), model.encode_key(x2)
    expected = 0.5 * (info_nce(q1, k2, queue, 0.2) + info_nce(q2, k1, queue, 0.2))
    assert model([x1, x2])["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert int(model.queue_ptr) == 6


def test_momentum_update_formula():
    model = tiny_moco(momentum=0.9)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)  # make online and key weights differ
    before_k = [p.clone() for p in model.key_encoder.parameters()]
    online = [p.clone() for p in model.encoder.parameters()]
    model.after_optimizer_step(0.5)
    for p_k, b_k, p_q in zip(model.key_encoder.parameters(), before_k, online):
        assert torch.allclose(p_k, 0.9 * b_k + 0.1 * p_q, atol=1e-6)
    # the head follows the same rule
    lin_q, lin_k = model.projector[0], model.key_projector[0]
    assert torch.allclose(lin_k.weight, lin_q.weight)  # equal at init, so still equal


def test_momentum_update_helper_on_plain_modules():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    a_w, b_w = a.weight.clone(), b.weight.clone()
    momentum_update_(a, b, 0.999)
    assert torch.allclose(a.weight, 0.999 * a_w + 0.001 * b_w)


def test_queue_wraps_around():
    model = tiny_moco(queue_size=10)
    keys = [F.normalize(torch.randn(4, 128), dim=1) for _ in range(3)]
    for k in keys:
        model.enqueue(k)
    assert int(model.queue_ptr) == 2  # 12 keys into 10 slots
    assert torch.allclose(model.queue[0:2], keys[2][2:4])   # wrapped
    assert torch.allclose(model.queue[2:4], keys[0][2:4])   # oldest survivors
    assert torch.allclose(model.queue[4:8], keys[1])
    assert torch.allclose(model.queue[8:10], keys[2][0:2])


def test_no_gradient_reaches_key_encoder():
    model = tiny_moco()
    out = model([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    out["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in model.key_encoder.parameters())
    assert all(p.grad is None for p in model.key_projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    optimised = {id(p) for g in model.parameter_groups() for p in g["params"]}
    assert optimised.isdisjoint(id(p) for p in model.key_encoder.parameters())


def test_shuffle_bn_unshuffles_keys():
    model = tiny_moco()
    model.eval()  # with running statistics, shuffling must not change any key
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        plain = F.normalize(model.key_projector(model.key_encoder(x)), dim=1)
    assert torch.allclose(model.encode_key(x), plain, atol=1e-5)


def test_shuffle_bn_uses_different_batch_statistics_in_training():
    model = tiny_moco(bn_group_size=2)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    shuffled = model.encode_key(x)
    model.shuffle_bn = False
    whole = model.encode_key(x)
    assert not torch.allclose(shuffled, whole, atol=1e-4)


def test_moco_head_matches_paper():
    model = tiny_moco()
    layers = [type(m).__name__ for m in model.projector]
    assert layers == ["Linear", "ReLU", "Linear"]
    assert model.projector[0].in_features == model.num_features == model.projector[0].out_features
    assert model.projector[2].out_features == 128
    assert isinstance(model, MoCoV2) and model.temperature == 0.2


def test_wrong_number_of_views_is_a_clear_error():
    model = tiny_moco()
    with pytest.raises(ValueError, match="expects 2 views"):
        model([torch.randn(2, 3, 32, 32)])
