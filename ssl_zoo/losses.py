"""Loss functions as pure functions of tensors (no module state)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(query: Tensor, key: Tensor, queue: Tensor | None, temperature: float) -> Tensor:
    """MoCo's InfoNCE: each query's positive is its key, negatives are the queue.

    ``query`` and ``key`` are (B, D) and L2-normalised; ``queue`` is (K, D) of
    normalised past keys (or None for in-batch only positives, i.e. K = 0). The
    positive sits at logit index 0, as in the official code.
    """
    positive = (query * key).sum(dim=1, keepdim=True)
    logits = positive if queue is None else torch.cat([positive, query @ queue.t()], dim=1)
    logits = logits / temperature
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, labels)


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's D(p, z) = -cos(p, sg(z)), averaged over the batch."""
    return -F.cosine_similarity(prediction, target.detach(), dim=-1).mean()


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent over 2B samples: (z_a[i], z_b[i]) are positives, all other 2B-2 negatives."""
    z = F.normalize(torch.cat([z_a, z_b], dim=0), dim=1)
    n = z_a.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)
