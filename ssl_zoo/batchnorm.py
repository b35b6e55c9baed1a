"""BatchNorm grouping as the official MoCo / SimSiam runs use it, at any process count.

Two ways a paper run decides which images share BatchNorm statistics:

- **Groups of a fixed size** (MoCo v2, LeOCLR, synth on MoCo): the official 8-GPU ImageNet run
  normalises each GPU's 32 images on their own, and the official single-GPU CIFAR demo splits
  BatchNorm into 8 groups inside one forward pass. ``SplitBatchNorm2d`` does that: in training
  mode a batch of ``n`` images is normalised in ``n / group_size`` groups within ONE pass (a
  reshape that folds the groups into channels, so no chunked encoder calls). Group ``j`` holds
  images ``j, j + S, j + 2S, ...`` (S = number of groups); the data loader's order is random, so
  this is a random partition, as the per-GPU split is. A batch no larger than ``group_size`` is
  not split. Running statistics are the mean over the groups' updates; in eval mode it is plain
  BatchNorm. Its ``state_dict`` keys are BatchNorm's, so exported weights load in plain timm.
- **One group over every process** (SimSiam: the official script converts the model to
  SyncBatchNorm). ``convert_sync_batchnorm`` uses timm's converter (torch ``SyncBatchNorm``,
  which also handles timm's norm-act layers) on accelerators, and ``CpuSyncBatchNorm`` (the same
  statistics through a differentiable ``all_reduce`` over gloo) on CPU, where torch's
  SyncBatchNorm refuses to run.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import UserInputError


def _average_factor(bn: _BatchNorm) -> float:
    """The running-statistics update factor ``_BatchNorm.forward`` would use (and its step count)."""
    if not (bn.training and bn.track_running_stats):
        return 0.0
    bn.num_batches_tracked.add_(1)
    if bn.momentum is None:  # cumulative moving average
        return 1.0 / float(bn.num_batches_tracked)
    return float(bn.momentum)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics come from groups of ``group_size`` images."""

    def __init__(self, num_features: int, group_size: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if group_size < 1:
            raise ValueError(f"bn_group_size must be >= 1, got {group_size}.")
        self.group_size = int(group_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if not self.training or n <= self.group_size:
            return super().forward(x)
        if n % self.group_size:
            raise ValueError(f"A batch of {n} images cannot be split into BatchNorm groups of {self.group_size} "
                             f"(bn_group_size). Use a per-process batch that is a multiple of {self.group_size} "
                             f"(global batch / processes / grad_accum), or change bn_group_size.")
        groups = n // self.group_size
        c = x.shape[1]
        factor = _average_factor(self)
        track = self.track_running_stats
        mean = self.running_mean.repeat(groups) if track else None
        var = self.running_var.repeat(groups) if track else None
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        # (n, C, H, W) -> (n / S, S * C, H, W): channel block j holds images j, j + S, ... (one group).
        y = F.batch_norm(x.reshape(n // groups, groups * c, *x.shape[2:]), mean, var, weight, bias,
                         True, factor, self.eps)
        if track:
            # Through .data: no version bump. A batch no larger than a group earlier in the same step (synth's
            # B-image views before its 2B-image pair batch) went through plain BatchNorm, whose graph saved these
            # buffers; an in-place copy_ would make its backward fail ("modified by an inplace operation"),
            # though training-mode backward never reads them (native BatchNorm's own update does not bump either).
            self.running_mean.data.copy_(mean.view(groups, c).mean(0))
            self.running_var.data.copy_(var.view(groups, c).mean(0))
        return y.reshape(x.shape)


def convert_split_batchnorm(module: nn.Module, group_size: int | None) -> nn.Module:
    """Replace every plain ``nn.BatchNorm2d`` by a ``SplitBatchNorm2d`` sharing its tensors.

    ``group_size=None`` returns ``module`` unchanged. Subclasses with behaviour of their own
    (timm's ``BatchNormAct2d`` and friends) are refused rather than silently stripped.
    """
    if group_size is None:
        return module
    if type(module) is nn.BatchNorm2d:
        out = SplitBatchNorm2d(module.num_features, group_size, eps=module.eps, momentum=module.momentum,
                               affine=module.affine, track_running_stats=module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm2d):
        raise ValueError(f"bn_group_size supports plain BatchNorm2d layers; this encoder has a "
                         f"{type(module).__name__}. Use bn_group_size=None (one group per process) for it.")
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, group_size))
    return module


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the all-reduced sum of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(_BatchNorm):
    """SyncBatchNorm for CPU processes (gloo): statistics over the batches of every process."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        c = x.shape[1]
        shape = [1, c] + [1] * (x.dim() - 2)
        # Two passes, as BatchNorm itself: the global mean, then the global sum of squared deviations from it.
        # (One pass, E[x^2] - E[x]^2, cancels in float32 when |mean| >> std: in tests/test_scale_fidelity.py's
        # SimSiam-synth run it put relative errors of 4.5e-3 into step-0 gradients against one BatchNorm over the
        # same images; two passes: 1.0e-4.)
        count = x.new_tensor([x.numel() / c])
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        factor = _average_factor(self)
        if self.track_running_stats:
            with torch.no_grad():
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return y


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        out = CpuSyncBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum,
                               affine=module.affine, track_running_stats=module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        raise ValueError(f"sync_bn on CPU supports plain BatchNorm layers; this model has a {type(module).__name__}.")
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` normalises over the global batch (all processes)."""
    if any(isinstance(m, SplitBatchNorm2d) for m in module.modules()):
        raise ValueError("sync_bn and bn_group_size both set: choose one BatchNorm grouping.")
    if torch.device(device).type == "cpu":
        return _to_cpu_sync(module)
    from timm.layers import convert_sync_batchnorm as timm_convert

    return timm_convert(module)


def batchnorm_groups(module: nn.Module) -> dict[str, str]:
    """``{layer name: grouping}`` for every BatchNorm of ``module`` (for logs and tests)."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, SplitBatchNorm2d):
            out[name] = f"groups of {m.group_size}"
        elif isinstance(m, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
            out[name] = "all processes"
        elif isinstance(m, _BatchNorm):
            out[name] = "per process"
    return out


class BatchNormGroupError(UserInputError):
    """A recipe that requires its BatchNorm group size (``strict_bn_groups``) runs with smaller per-process batches."""


def effective_bn_group_size(module: nn.Module, *, per_process_batch: int, num_processes: int, global_batch: int,
                            sync_bn: bool) -> tuple[int | None, int | None]:
    """``(recipe's, effective)`` images per BatchNorm group in one view's forward pass; ``(None, None)`` without
    BatchNorm, ``(None, per_process_batch)`` for plain per-process BatchNorm (no size was asked for).

    ``SplitBatchNorm2d`` groups of ``g`` images become the whole per-process batch when a process gets fewer
    than ``g`` images; SyncBatchNorm's group is every process's batch of one micro-step (the global batch
    divided by the gradient accumulation).
    """
    if not any(isinstance(m, _BatchNorm) for m in module.modules()):
        return None, None
    split = [m.group_size for m in module.modules() if isinstance(m, SplitBatchNorm2d)]
    if split:
        return max(split), min(max(split), per_process_batch)
    if sync_bn:
        return global_batch, per_process_batch * num_processes
    return None, per_process_batch


def check_bn_group_size(module: nn.Module, *, per_process_batch: int, num_processes: int, global_batch: int,
                        sync_bn: bool, strict: bool, recipe_name: str) -> tuple[int | None, str | None]:
    """The effective group size and, when it is smaller than the recipe's, a one-line warning; with ``strict``
    (the recipe's ``strict_bn_groups``) a :class:`BatchNormGroupError` instead."""
    wanted, effective = effective_bn_group_size(module, per_process_batch=per_process_batch,
                                                num_processes=num_processes, global_batch=global_batch,
                                                sync_bn=sync_bn)
    if wanted is None or effective is None or effective >= wanted:
        return effective, None
    split = any(isinstance(m, SplitBatchNorm2d) for m in module.modules())
    what = f"bn_group_size {wanted}" if split else "SyncBatchNorm over the global batch"
    fix = "use fewer processes, a larger --batch-size or a smaller --grad-accum" if split else "use --grad-accum 1"
    note = (f"{recipe_name}: {what}, but a step gives each of {num_processes} process(es) {per_process_batch} "
            f"images, so BatchNorm groups become {effective} images instead of {wanted}")
    if strict:
        raise BatchNormGroupError(f"{note} (the recipe sets strict_bn_groups); {fix}, or --set strict_bn_groups=False.")
    return effective, f"{note}; {fix} to keep the recipe's groups (config.json records bn_group_size {effective})."


__all__ = ["SplitBatchNorm2d", "convert_split_batchnorm", "CpuSyncBatchNorm", "convert_sync_batchnorm",
           "batchnorm_groups", "BatchNormGroupError", "effective_bn_group_size", "check_bn_group_size"]
