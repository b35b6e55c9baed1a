"""Feature extraction with a frozen encoder, in one process or sharded across several.

Under ``accelerate launch`` with N processes the loader is sharded by Accelerate
(no shuffling: each process takes every N-th batch), the last uneven batch is
padded by Accelerate, and ``accelerator.gather_for_metrics`` drops that padding,
so **every process** gets the full feature matrix in dataset order with no
duplicates. Metrics are then computed once, on the main process, by the callers.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

if TYPE_CHECKING:
    from accelerate import Accelerator


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict):
        if "image" not in batch or "label" not in batch:
            raise ValueError(f"dict batches need 'image' and 'label' keys, got {sorted(batch)}.")
        return batch["image"], batch["label"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
        if isinstance(images, (list, tuple)):
            raise ValueError("got a multi-view batch (a list of image tensors); feature extraction needs a single "
                             "view: build the dataset with one eval transform, not MultiViewTransform.")
        return images, torch.as_tensor(labels)
    raise ValueError("batches must be (images, labels) pairs or dicts with 'image' and 'label'; "
                     f"got {type(batch).__name__}.")


def make_loader(dataset_or_loader: Dataset | DataLoader, batch_size: int = 256, num_workers: int = 0,
                shuffle: bool = False, drop_last: bool = False, seed: int | None = None) -> DataLoader:
    """A DataLoader over a dataset (a DataLoader is passed through, checked not to shuffle when shuffle=False)."""
    if isinstance(dataset_or_loader, DataLoader):
        if not shuffle and isinstance(dataset_or_loader.sampler, RandomSampler):
            raise ValueError("the DataLoader shuffles; feature extraction keeps dataset order: pass the dataset "
                             "or a DataLoader with shuffle=False.")
        return dataset_or_loader
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset_or_loader, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last, generator=generator, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def _as_features(output: Any) -> Tensor:
    if isinstance(output, (list, tuple)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise ValueError(f"the encoder returned {type(output).__name__}; it must return a (B, D) tensor.")
    if output.ndim != 2:
        raise ValueError(f"the encoder returned shape {tuple(output.shape)}; it must return pooled (B, D) "
                         "features (create timm backbones with num_classes=0 and global pooling).")
    return output


@torch.no_grad()
def extract_features(encoder: nn.Module | Callable[[Tensor], Tensor], dataset_or_loader: Dataset | DataLoader,
                     batch_size: int = 256, num_workers: int = 0, accelerator: Accelerator | None = None,
                     device: torch.device | str | None = None, progress: str | None = None) -> tuple[Tensor, Tensor]:
    """Run ``encoder`` over a dataset in eval mode under ``no_grad``.

    Returns ``(features, labels)``: float32 ``(N, D)`` and int64 ``(N,)`` CPU tensors in
    dataset order. With a multi-process ``accelerator`` each process encodes a shard
    and all processes receive the full, de-duplicated result. The encoder is moved to
    ``accelerator.device`` (or ``device``; default: where its parameters are) and its
    train/eval mode is restored afterwards. ``progress``: a tqdm bar with this description (main process only).
    """
    loader = make_loader(dataset_or_loader, batch_size=batch_size, num_workers=num_workers)
    if accelerator is not None:
        device = accelerator.device
        # prepare() shards the batches across processes and records the padding that
        # gather_for_metrics later removes; a single process gets the loader back unsharded.
        loader = accelerator.prepare_data_loader(loader, device_placement=True)
    else:
        device = torch.device(device) if device is not None else _module_device(encoder)
    if isinstance(encoder, nn.Module):
        encoder.to(device)  # no-op when already there
    was_training = getattr(encoder, "training", False)
    if isinstance(encoder, nn.Module):
        encoder.eval()
    features, labels = [], []
    batches: Any = loader
    if progress is not None and (accelerator is None or accelerator.is_main_process):
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=progress, unit="batch", dynamic_ncols=True)
    try:
        for batch in batches:
            images, targets = _split_batch(batch)
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if accelerator is not None:
                with accelerator.autocast():
                    out = _as_features(encoder(images))
                out, targets = accelerator.gather_for_metrics((out.float().contiguous(), targets.contiguous()))
            else:
                out = _as_features(encoder(images))
            features.append(out.float().cpu())
            labels.append(targets.long().cpu())
    finally:
        if isinstance(encoder, nn.Module):
            encoder.train(was_training)
    if not features:
        raise ValueError("the dataset is empty; nothing to extract.")
    return torch.cat(features), torch.cat(labels)


def _module_device(module: Any) -> torch.device:
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return torch.device("cpu")


def recipe_split_features(encoder: nn.Module | Callable[[Tensor], Tensor], recipe: Any, data: str | None = None,
                          batch_size: int = 256, num_workers: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(train_x, train_y, test_x, test_y)``: features of the recipe's dataset, labelled train and test splits,
    through the recipe's ``"eval"`` view (the k-NN bank / probe training set and the test queries)."""
    from ..data import create_dataset
    from ..transforms import build_view_transform

    transform = build_view_transform("eval", recipe.augment)
    out: list[Tensor] = []
    for split in ("train", "test"):
        dataset = create_dataset(recipe.dataset, root=data, split=split, transform=transform)
        out.extend(extract_features(encoder, dataset, batch_size=batch_size, num_workers=num_workers))
    return out[0], out[1], out[2], out[3]
