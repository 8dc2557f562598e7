"""Multi-process training with DistributedDataParallel (``torchrun --nproc_per_node=K training/train.py``).

torchrun starts K copies of the entry point and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins the process group from them (NCCL
on CUDA with one GPU per rank, Gloo on CPU or when several ranks share a GPU). Without those variables everything here is a no-op and a run is one
ordinary process. The rules the trainers follow:

* every rank builds the same model (same seed) and DDP averages the gradients, so the weights stay
  identical; each rank draws *different* training data (per-rank seeds, :func:`rank_seed`);
* only rank 0 writes checkpoints, logs, results and pseudo labels (:func:`is_main`);
* buffers that are not gradients (BatchNorm running statistics) are updated by each rank from its
  own batch; :func:`sync_buffers` copies rank 0's before a checkpoint so every rank holds exactly
  the model that was saved.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes; returns the device this rank trains on
    (``cuda:LOCAL_RANK`` for a CUDA run, else ``device`` unchanged). One process: returns ``device``."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    use_cuda = device.startswith("cuda")
    backend = "gloo"
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        gpus = torch.cuda.device_count()
        # NCCL refuses two ranks on one GPU; ranks that share GPUs (more data-producing processes
        # than GPUs: DeepIM's renders and zoom-ins run on the CPU) reduce their gradients with Gloo
        backend = "nccl" if local_world <= gpus else "gloo"
        torch.cuda.set_device(local_rank % max(1, gpus))
        device = f"cuda:{local_rank % max(1, gpus)}"
    dist.init_process_group(backend=backend)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def rank_seed(seed: int) -> int:
    """The data seed of this rank: ``seed`` itself on rank 0 (a one-process run draws exactly the
    data it drew before DDP existed), a distinct stream on every other rank."""
    return seed if rank() == 0 else seed + 7919 * rank()


def wrap(model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several processes train, else ``model`` itself.
    Call the returned module for the forward pass; save ``model`` (no ``module.`` key prefix)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def broadcast_object(value):
    """``value`` of rank 0 on every rank (picklable objects)."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_float(value: float) -> float:
    """Rank 0's ``value`` on every rank (e.g. its clock); ``value`` itself with one process."""
    if world_size() == 1:
        return float(value)
    # NCCL moves CUDA tensors only
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    holder = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(holder, src=0)
    return float(holder.item())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (a CPU tensor, e.g. pixel counts); itself with one process."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
