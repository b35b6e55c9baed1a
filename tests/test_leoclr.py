"""LeOCLR against the paper: three views, loss on fixed tensors, 2 x batch keys enqueued, stop-gradient."""
import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import ssl_zoo
from ssl_zoo.methods.leoclr import LeOCLR
from ssl_zoo.methods.moco import MomentumQueueMixin


def tiny_leoclr(**kw):
    kw.setdefault("queue_size", 16)
    return ssl_zoo.create_method("leoclr_r18_digits", arch="test_resnet", model_args={}, image_size=32, **kw)


def batch(b=4):
    return [torch.randn(b, 3, 32, 32) for _ in range(3)]


def test_declares_original_and_two_crops_and_reuses_moco_pieces():
    model = tiny_leoclr()
    assert isinstance(model, LeOCLR) and isinstance(model, MomentumQueueMixin)
    assert model.view_names == ("original", "crop", "crop")
    assert [type(m).__name__ for m in model.projector] == ["Linear", "ReLU", "Linear"]


def test_recipes_follow_the_paper():
    for name, epochs in [("leoclr_r50_in1k", 200), ("leoclr_r50_in1k_800ep", 800)]:
        r = ssl_zoo.get_recipe(name)
        assert (r.backbone.arch, r.train.epochs, r.train.batch_size, r.train.base_lr, r.train.weight_decay,
                r.train.sgd_momentum, r.image_size) == ("resnet50", epochs, 256, 0.03, 1e-4, 0.9, 224)
        assert (r.method_args["momentum"], r.method_args["temperature"], r.method_args["queue_size"]) == (
            0.999, 0.2, 65536)
    for ds in ("cifar10", "stl10"):  # same settings as the MoCo v2 baseline it is compared with
        lr, mr = ssl_zoo.get_recipe(f"leoclr_r18_{ds}"), ssl_zoo.get_recipe(f"moco_v2_r18_{ds}")
        assert lr.train == mr.train and lr.augment == mr.augment and lr.backbone == mr.backbone
        assert lr.train.epochs == 800
    d, m = ssl_zoo.get_recipe("leoclr_r18_digits"), ssl_zoo.get_recipe("moco_v2_r18_digits")
    assert d.train == m.train and d.augment == m.augment and dict(d.method_args) == dict(m.method_args)
    assert not any(ssl_zoo.get_recipe(n).weights.published for n in ssl_zoo.list_models("leoclr*"))


def _info_nce_by_hand(q, k, queue, t):
    """-log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.queue_j/t))) averaged, via an explicit logsumexp."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[i]) / t] + [float(q[i] @ queue[j]) / t for j in range(queue.shape[0])]
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        total += lse - logits[0]
    return total / q.shape[0]


def test_loss_is_sum_of_original_vs_each_crop_against_queue_before_enqueue():
    model = tiny_leoclr(shuffle_bn=False)
    model.eval()
    x, c1, c2 = batch()
    queue = model.queue.clone()
    with torch.no_grad():
        u = F.normalize(model.projector(model.encoder(x)), dim=1)
        v1 = F.normalize(model.key_projector(model.key_encoder(c1)), dim=1)
        v2 = F.normalize(model.key_projector(model.key_encoder(c2)), dim=1)
    out = model([x, c1, c2])
    l1, l2 = _info_nce_by_hand(u, v1, queue, 0.2), _info_nce_by_hand(u, v2, queue, 0.2)
    assert out["loss_orig_crop1"].item() == pytest.approx(l1, rel=1e-4)
    assert out["loss_orig_crop2"].item() == pytest.approx(l2, rel=1e-4)
    assert out["loss"].item() == pytest.approx(l1 + l2, rel=1e-4)
    # The crops are not each other's positive: the MoCo loss between them is a different number.
    assert out["loss"].item() != pytest.approx(_info_nce_by_hand(v1, v2, queue, 0.2) * 2, rel=1e-3)


def test_queue_receives_both_crops_keys_per_step():
    model = tiny_leoclr(shuffle_bn=False, queue_size=12)
    model.eval()
    x, c1, c2 = batch(4)
    before = model.queue.clone()
    with torch.no_grad():
        v1, v2 = model.encode_key(c1), model.encode_key(c2)
    model([x, c1, c2])
    assert int(model.queue_ptr) == 8  # 2 x batch
    assert torch.allclose(model.queue[0:4], v1, atol=1e-6)
    assert torch.allclose(model.queue[4:8], v2, atol=1e-6)
    assert torch.equal(model.queue[8:], before[8:])
    model(batch(4))
    assert int(model.queue_ptr) == 4  # 16 keys into 12 slots wrap around


def test_no_gradient_to_key_encoder_or_crops():
    model = tiny_leoclr()
    x, c1, c2 = [v.requires_grad_(True) for v in batch()]
    model([x, c1, c2])["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.key_encoder.parameters())
    assert all(p.grad is None for p in model.key_projector.parameters())
    assert c1.grad is None and c2.grad is None  # crops only reach the loss as stop-gradient keys
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    optimised = {id(p) for g in model.parameter_groups() for p in g["params"]}
    assert optimised.isdisjoint(id(p) for p in [*model.key_encoder.parameters(), *model.key_projector.parameters()])


def test_momentum_update_after_optimizer_step():
    model = tiny_leoclr(momentum=0.9)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.add_(1.0)
    k_before = [p.clone() for p in model.key_projector.parameters()]
    q = [p.clone() for p in model.projector.parameters()]
    model.after_optimizer_step(0.1)
    for p_k, b, p_q in zip(model.key_projector.parameters(), k_before, q):
        assert torch.allclose(p_k, 0.9 * b + 0.1 * p_q, atol=1e-6)


def test_wrong_number_of_views_is_a_clear_error():
    with pytest.raises(ValueError, match="expects 3 views"):
        tiny_leoclr()(batch()[:2])


def _distributed_step(rank: int, world: int, init_file: str, result_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical initial weights and queue on both ranks, as DDP would have
        model = tiny_leoclr(queue_size=32)
        model.eval()
        torch.manual_seed(100 + rank)  # different data per rank
        views = batch(4)
        with torch.no_grad():
            v1 = model.key_projector(model.key_encoder(views[1]))
            v2 = model.key_projector(model.key_encoder(views[2]))
        model(views)
        if rank == 0:
            torch.save({"queue": model.queue, "ptr": model.queue_ptr}, result_file)
        keys = torch.cat([F.normalize(v1, dim=1), F.normalize(v2, dim=1)])
        torch.save(keys, f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_enqueue_gathers_both_crops_from_every_process():
    with tempfile.TemporaryDirectory() as tmp:
        init, result = os.path.join(tmp, "init"), os.path.join(tmp, "result.pt")
        mp.spawn(_distributed_step, args=(2, init, result), nprocs=2, join=True)
        state = torch.load(result, weights_only=True)
        keys = [torch.load(f"{result}.{r}", weights_only=True) for r in range(2)]
    assert int(state["ptr"]) == 16  # 2 crops x 4 images x 2 processes
    assert torch.allclose(state["queue"][:16], torch.cat(keys), atol=1e-5)
