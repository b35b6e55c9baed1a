"""The training DataLoader: decoding and augmentation in worker processes, pinned memory on CUDA.

Workers ignore SIGINT/SIGTERM (:func:`init_worker`), so nothing but this module may be trusted to end them:
:class:`TrainLoader` stops its workers (SIGKILL for any that outlive torch's own shutdown) as soon as a batch
fails, and once more at interpreter exit, where torch's shutdown does nothing and ``multiprocessing`` would
wait forever for a worker that ignores its SIGTERM. A worker's error reaches the caller as its own message
(one line naming the file), not torch's "Caught ... in DataLoader worker" text with the worker's traceback.
"""
from __future__ import annotations

import atexit
import random
import signal
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import SslZooError

if TYPE_CHECKING:
    from ..recipe import Recipe


def seed_worker(worker_id: int) -> None:
    """Give numpy and ``random`` in each worker the per-worker seed torch already chose."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the training loader: ignore SIGINT/SIGTERM, then :func:`seed_worker`.

    Ctrl-C and schedulers (SLURM, Kubernetes, ``kill -TERM -PGID``) signal the whole process group. A
    worker that died of it would crash the main process ("DataLoader worker ... killed by signal")
    before it could checkpoint; ignoring the signal leaves the stop to the main process, which
    finishes the step, checkpoints and shuts the workers down. Workers still exit when the main
    process dies (PyTorch's worker watchdog) and on SIGKILL.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Born with both blocked (TrainLoader.__iter__): a signal that came before this point was held pending, and
    # is dropped now that it is ignored, instead of killing a worker that had not yet set its handlers.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    seed_worker(worker_id)


def worker_error_message(exc: BaseException) -> str | None:
    """The worker's own message inside torch's re-raised ``Caught X in DataLoader worker N. Original
    Traceback ...`` text, or None when ``exc`` is not such a re-raise."""
    text = str(exc)
    if not text.startswith("Caught ") or "DataLoader worker" not in text or "Original Traceback" not in text:
        return None
    cls = type(exc)
    for marker in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__name__}: "):
        at = text.rfind(marker)
        if at >= 0:
            return text[at + len(marker):].strip()
    return None


_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # multi-process iterators whose workers may still run
_WORKERS: weakref.WeakSet[Any] = weakref.WeakSet()  # their worker processes, even after the iterator is gone


def stop_workers(iterator: Any) -> None:
    """End the worker processes of a DataLoader iterator now (no-op without workers): torch's shutdown, then
    SIGKILL for any worker still alive (they ignore SIGTERM, so torch's own ``terminate`` cannot end them)."""
    workers = list(getattr(iterator, "_workers", ()))
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:  # a worker already gone: what is left is killed below
            pass
    for worker in workers:
        if worker.is_alive():
            worker.kill()
        worker.join(timeout=5)
    _LIVE.discard(iterator)


@atexit.register  # registered after torch.utils.data's exit hook, so it runs before it (LIFO)
def _stop_all_workers() -> None:
    for iterator in list(_LIVE):
        stop_workers(iterator)
    # Workers that outlived torch's shutdown of a finished iterator (its SIGTERM is ignored): multiprocessing's
    # own exit hook would join them forever.
    for worker in list(_WORKERS):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)


class _Batches:
    """The batches of one pass over a :class:`TrainLoader`; a failed batch stops the workers first."""

    def __init__(self, inner: Iterator[Any]) -> None:
        self.inner = inner
        if getattr(inner, "_workers", None):
            _LIVE.add(inner)
            _WORKERS.update(inner._workers)  # type: ignore[attr-defined]

    def __iter__(self) -> _Batches:
        return self

    def __len__(self) -> int:
        return len(cast(Any, self.inner))

    def __next__(self) -> Any:
        try:
            return next(self.inner)
        except StopIteration:
            _LIVE.discard(self.inner)
            raise
        except Exception as exc:
            stop_workers(self.inner)
            message = worker_error_message(exc) if isinstance(exc, SslZooError) else None
            if message is None:
                raise
            raise type(exc)(message) from None

    def close(self) -> None:
        stop_workers(self.inner)

    def __del__(self) -> None:  # a loop left early (a stop request, max_steps): no worker outlives it
        if self.inner in _LIVE:
            stop_workers(self.inner)


class TrainLoader(DataLoader):
    """A DataLoader whose workers never outlive a failed batch or the interpreter (see the module docstring)."""

    def __iter__(self) -> Any:
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return _Batches(super().__iter__())
        # Workers start here (each epoch without persistent workers). A stop signalled to the process group while
        # one starts would kill it before init_worker makes it ignore the signal, and the main process would die
        # of "DataLoader worker exited unexpectedly" instead of checkpointing. Blocked signals are inherited by the
        # workers and stay pending in this process, whose handler runs as soon as the mask is restored.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return _Batches(super().__iter__())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def build_train_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, shuffle: bool = True,
                       drop_last: bool = True, seed: int = 0, pin_memory: bool | None = None,
                       prefetch_factor: int | None = None, persistent_workers: bool = True,
                       sampler: Sampler | None = None, generator: torch.Generator | None = None) -> DataLoader:
    """DataLoader for training: seeded shuffling, persistent workers when ``num_workers > 0`` (no
    re-fork and re-read of the file lists every epoch) and pinned memory when CUDA is available.
    Workers ignore SIGINT/SIGTERM (:func:`init_worker`): the main process handles a stop.

    ``sampler`` replaces shuffling (then ``shuffle`` is ignored); ``generator`` replaces the one seeded
    with ``seed`` (it also draws the worker seeds). Persistent workers keep their random state across
    epochs, so a run resumed mid-way draws different augmentations than an uninterrupted one; pass
    ``persistent_workers=False`` where that exactness matters more than the per-epoch start-up."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if drop_last and sampler is None and len(dataset) < batch_size:  # type: ignore[arg-type]
        raise ValueError(f"The dataset has {len(dataset)} images, fewer than one batch of {batch_size} "  # type: ignore[arg-type]
                         "(drop_last=True would give no batch at all); lower the batch size.")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent_workers, worker_init_fn=init_worker)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return TrainLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else None,
                      sampler=sampler, drop_last=drop_last, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      generator=generator, **kwargs)


def open_train_data(recipe: Recipe, data: str | None,
                    on_error: str = "raise") -> tuple[Recipe, Dataset, dict[str, Any], str | None]:
    """The training split for ``recipe`` read from ``data``, whatever the folder holds (no transform; cheap).

    ``data`` is read as the recipe dataset's own layout when it matches (e.g. ``stl10_binary/`` for an stl10
    recipe), else as a class tree (``imagefolder``), else as a folder of unlabelled images (``unlabelled_images``):
    training needs no labels. Returns the recipe (its ``dataset`` / ``train_split`` switched to the reader used),
    the dataset, the record of what was read (``kind``, ``dataset``, ``path``, ``num_images``, ``num_classes``,
    ``splits``: config.json's ``ssl_zoo.data``) and a console line saying so when ``data`` was given.
    """
    from .folder import detect_and_open
    from .registry import create_dataset, get_dataset_info

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    mode = cast(Literal["raise", "skip"], on_error)
    if data is None:
        dataset = create_dataset(recipe.dataset, root=None, split=recipe.train_split, transform=None, on_error=mode)
        record = {"kind": "dataset", "dataset": recipe.dataset, "path": None, "num_images": len(dataset),
                  "num_classes": len(dataset.classes), "splits": list(get_dataset_info(recipe.dataset).splits)}
        return recipe, dataset, record, None
    layout, opened = detect_and_open(data, recipe.dataset, split=recipe.train_split, on_error=mode)
    if opened is None:
        wanted = recipe.dataset
        recipe = recipe.with_overrides(dataset=layout.dataset, train_split="train")
        opened = create_dataset(layout.dataset, root=layout.root, split="train", transform=None, on_error=mode)
        note = (f"--data {data}: {layout.describe()}, read as {layout.dataset!r}"
                + (f" (recipe {recipe.name!r} was made for {wanted!r})" if wanted != layout.dataset else "") + ".")
    else:
        note = f"--data {data}: {layout.describe()}."
    record = {**layout.to_dict(), "path": str(layout.root.resolve()), "num_images": len(opened)}
    return recipe, opened, record, note


def build_epoch_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Sampler,
                       generator: torch.Generator) -> DataLoader:
    """The training loop's loader: batches in ``sampler``'s order, workers seeded from ``generator``."""
    # The loader has its own generator (reseeded per epoch), so drawing worker seeds never touches
    # the global RNG: a resumed run consumes exactly the random numbers of an uninterrupted one.
    # Workers are not persistent for the same reason: each epoch's workers start from that epoch's seed.
    return build_train_loader(dataset, batch_size, num_workers, sampler=sampler, generator=generator,
                              drop_last=True, persistent_workers=False)
