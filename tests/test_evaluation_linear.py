"""Linear probe: the MoCo schedule, frozen encoder, and high accuracy on separable data."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssl_zoo.evaluation import LinearProbeCfg, linear_probe, linear_probe_on_features, make_classifier


def _separable(n_per_class: int, num_classes: int = 4, dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 3
    labels = torch.arange(num_classes).repeat(n_per_class)
    return centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g), labels


def test_schedule_and_init_follow_moco():
    cfg = LinearProbeCfg()
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (100, 30.0, 0.9, 0.0, 256)
    assert [cfg.lr_at(e) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx([30, 30, 3, 3, 0.3, 0.3])
    torch.manual_seed(0)
    fc = make_classifier(512, 100)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert fc.weight.mean().abs().item() < 1e-3 and torch.count_nonzero(fc.bias) == 0


def test_linear_probe_on_separable_features():
    train_f, train_l = _separable(25)
    test_f, test_l = _separable(10, seed=0)
    test_f = test_f + 0.1 * torch.randn_like(test_f)
    result = linear_probe_on_features(train_f, train_l, test_f, test_l, epochs=10, milestones=(6, 8), batch_size=32)
    assert result["top1"] >= 0.95
    assert result["top5"] == 1.0  # 4 classes: top-5 covers them all
    assert result["num_classes"] == 4
    # Same seed, same result (deterministic shuffling and init).
    again = linear_probe_on_features(train_f, train_l, test_f, test_l, epochs=10, milestones=(6, 8), batch_size=32)
    assert again == result


def test_linear_probe_on_random_labels_is_near_chance_on_test():
    # Guard against a probe that leaks test labels: unrelated labels cannot be predicted.
    train_f, _ = _separable(25)
    g = torch.Generator().manual_seed(3)
    train_l = torch.randint(0, 4, (100,), generator=g)
    test_f, _ = _separable(50, seed=5)
    test_l = torch.randint(0, 4, (200,), generator=g)
    result = linear_probe_on_features(train_f, train_l, test_f, test_l, epochs=5, milestones=(), batch_size=32)
    assert result["top1"] < 0.45


class _Encoder(nn.Module):
    """A fixed random projection with BatchNorm (eval mode must keep its statistics)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, 32)
        self.bn = nn.BatchNorm1d(32)
        self.num_features = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.proj(x)))


def test_linear_probe_on_images_keeps_encoder_frozen():
    train_f, train_l = _separable(25)
    test_f, test_l = _separable(10, seed=0)
    encoder = _Encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = linear_probe(encoder, TensorDataset(train_f, train_l), TensorDataset(test_f, test_l), num_classes=4,
                          epochs=8, milestones=(5, 7), batch_size=25)
    assert result["top1"] >= 0.95
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats untouched
    assert not any(p.requires_grad for p in encoder.parameters())


def test_bad_settings_are_rejected():
    with pytest.raises(TypeError, match="unknown linear-probe settings"):
        linear_probe_on_features(torch.eye(2), torch.arange(2), torch.eye(2), torch.arange(2), epoch=3)
    with pytest.raises(ValueError, match="epochs"):
        LinearProbeCfg(epochs=0)
