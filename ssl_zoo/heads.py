"""Small MLP heads used by the methods."""
from __future__ import annotations

from torch import nn


def mlp(dims: list[int], batch_norm: bool = False, last_bn: bool = False, last_bn_affine: bool = True) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (BN before ReLU when asked).

    ``last_bn`` appends a BatchNorm after the last linear layer (SimSiam's projector).
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=not (batch_norm and (not last or last_bn))))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
    return nn.Sequential(*layers)


def moco_v2_head(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Sequential:
    """MoCo v2 projection: Linear - ReLU - Linear, no BN."""
    return mlp([in_dim, hidden_dim, out_dim])
