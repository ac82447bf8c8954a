"""Data-parallel helpers for ``torchrun`` (gloo on CPU, NCCL on GPUs).

Design choice: mflows models are not plain ``forward()`` modules; a training step calls several
methods (``project``, ``encode``, ``latent_log_prob``, ``sample``) and the M/D phases update
disjoint parameter subsets. :class:`~torch.nn.parallel.DistributedDataParallel` hooks only
``forward`` and would need a wrapper module per loss plus ``find_unused_parameters=True`` (an
extra graph traversal per step, and bucket bookkeeping that breaks when alternating phases leave
different parameters without gradients). Instead the trainer keeps the plain model and, after each
backward pass, all-reduces the gradients of the phase's parameters in ONE flat buffer
(:func:`average_gradients`): a single collective per step, exact for any phase, and the same
communication volume as DDP without bucket overlap (which matters little for models this size).

Consequences (tested in ``tests/test_distributed.py``):

* every rank starts from rank 0's weights (:func:`broadcast_parameters`), sees the same data order
  and takes identical optimiser steps, so all ranks end with bit-identical weights;
* with ``W`` ranks and per-rank batch ``b`` each step uses the gradient of the mean loss over the
  union of the ranks' batches, which equals the batch ``W * b`` of a single process with the same
  data order (:func:`shard_indices`); weights agree with that single-process run up to
  floating-point summation order (not bit-for-bit).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "average_gradients",
    "broadcast_parameters",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "rank",
    "reduce_mean",
    "shard_indices",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process writes checkpoints, logs and progress bars (rank 0)."""
    return rank() == 0


def init_distributed(device: torch.device | str | None = None) -> torch.device | None:
    """Initialises the process group from the ``torchrun`` environment when needed.

    Does nothing (and returns ``device``) unless ``WORLD_SIZE > 1`` is set and no group exists.
    Uses NCCL when CUDA is available and the device is not CPU, else gloo. On GPUs the device is
    ``cuda:LOCAL_RANK``.

    Returns:
        The device this rank should train on (``None``: keep the model's device).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return None if device is None else torch.device(device)
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return None if device is None else torch.device(device)


def shard_indices(order: Tensor, batch_size: int) -> list[Tensor]:
    """This rank's mini-batches of an epoch's global data order.

    Rank ``r`` of ``W`` takes ``order[r::W]`` (after dropping the ``len(order) % W`` last points so
    that every rank takes the same number of steps), cut into batches of ``batch_size``. Batch ``k``
    of all ranks together is then exactly batch ``k`` of size ``W * batch_size`` of a single
    process with the same order.

    Args:
        order: ``(N,)`` permutation of the training indices, identical on all ranks.
        batch_size: per-rank batch size.

    Returns:
        List of index tensors.
    """
    w, r = world_size(), rank()
    n = (len(order) // w) * w
    mine = order[:n][r::w]
    return list(torch.split(mine, batch_size))


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copies rank 0's parameters and buffers to every rank (no-op when not distributed)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Averages ``.grad`` over the ranks with one all-reduce of a flat buffer.

    Parameters whose ``.grad`` is ``None`` are skipped: every rank builds the same graph, so the
    set of parameters with gradients, hence the buffer layout, is the same on all ranks.
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def reduce_mean(values: Tensor, weight: float = 1.0) -> Tensor:
    """Weighted mean of ``values`` over the ranks (``weight``: e.g. this rank's sample count).

    Returns ``values`` unchanged when not distributed.
    """
    if not is_distributed():
        return values
    packed = torch.cat([values.detach().reshape(-1) * weight, values.new_tensor([weight])])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return (packed[:-1] / packed[-1]).reshape(values.shape)
