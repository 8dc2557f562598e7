"""DistributedDataParallel on CPU: two processes (gloo) train the DeepIM refiner through the same
entry point torchrun drives (``run_deepim`` after ``distributed.init_from_env``); both ranks must end
with identical weights, having trained on different data, and only rank 0 writes checkpoints."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from dsc_pose_core.objects.demo_object import write_demo_models, write_demo_registry

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, registry: str, out: str, dump_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import dsc_pose_core.training.deepim as deepim_module
    from dsc_pose_core.training import distributed
    from dsc_pose_core.training.stages import TrainConfig
    from dsc_pose_core.typed_config import from_dict

    created = []

    class RecordingTrainer(deepim_module.DeepImTrainer):  # keeps a handle on the trainer run_deepim builds
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    deepim_module.DeepImTrainer = RecordingTrainer
    device = distributed.init_from_env("cpu")
    config = from_dict(TrainConfig, {
        "stage": "deepim", "out": out, "seed": 0, "device": device, "threads": 1,
        "deepim": {"objects_file": registry,
                   "data": {"width": 160, "height": 120, "objects_per_image": 1, "distractors": 0,
                            "K": [143.1, 0.0, 81.3, 0.0, 143.4, 60.5, 0.0, 0.0, 1.0], "distance": [0.4, 0.6]},
                   "model": {"width": 0.125}, "zoom": {"width": 64, "height": 48}, "loss": {"n_points": 200},
                   "optim": {"steps": STEPS, "batch_size": 2, "lr": 1e-3, "train_iter": 1},
                   "checkpoint_every": 1, "log_every": 1, "image_every": 1}})
    try:
        deepim_module.run_deepim(config, out=out)
        assert distributed.world_size() == world
        trainer = created[0]
        torch.save({"state": {k: v.clone() for k, v in trainer.model.state_dict().items()},
                    "first_inputs": trainer.first_inputs.clone(), "step": trainer.step},
                   os.path.join(dump_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def test_two_gloo_processes_end_with_identical_weights_and_rank0_writes(tmp_path):
    from dsc_pose_core.checkpoint import read_checkpoint

    registry = write_demo_registry(tmp_path / "objects.yaml", write_demo_models(tmp_path / "models"))
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(registry), str(out), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["step"] == rank1["step"] == STEPS
    # different data on the two ranks (per-rank seeds), yet the same model after every update
    assert not torch.equal(rank0["first_inputs"], rank1["first_inputs"])
    assert rank0["state"].keys() == rank1["state"].keys()
    for key in rank0["state"]:
        assert torch.equal(rank0["state"][key], rank1["state"][key]), key
    # rank 0 wrote the checkpoint, and it holds exactly that model
    saved = read_checkpoint(out / "checkpoints" / "deepim_last.pt", "deepim")
    assert saved.resume["step"] == STEPS
    for key, value in saved.weights.items():
        assert torch.equal(value, rank0["state"][key]), key
    # one writer: one checkpoint per step and one TensorBoard event file, no per-rank copies
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == \
        ["deepim_last.pt"] + [f"deepim_step{s}.pt" for s in range(1, STEPS + 1)]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    # the weights moved between the first and the last update (identical but untrained would also pass)
    first = read_checkpoint(out / "checkpoints" / "deepim_step1.pt").weights
    assert any(not torch.equal(first[k], saved.weights[k]) for k in first if first[k].is_floating_point())
