"""DeepIM refinement time per object per iteration (deepim sec. 4.1 Testing; issue: "refinement time
per object per iteration at the CPU resolution (median), and on GPU at 480x640").

    python bench/bench_deepim_speed.py --device cpu --zoom 128x96 --width 0.25          # CPU config
    python bench/bench_deepim_speed.py --device cuda --zoom 640x480 --width 1.0         # paper config

On the first ``--frames`` LM-O `val` frames, every visible LM-O object starts from its ground-truth
pose perturbed with the training noise of appendix B.1 (seeded) and is refined ``--iterations``
times by ``DeepImRefiner`` exactly as the pose node runs it: one batch of all objects of the frame
per iteration (OpenGL render + zoom-in on the CPU side, one network call). Reported: the median
over frames of (time of one iteration / objects in the frame), split into inputs (render + zoom-in)
and network; plus the same for one object alone (batch of 1). Timing only: the weights are the
checkpoint's when given, else untrained (same cost). Writes the section
``deepim_speed_<device>_<W>x<H>`` of docs/BENCHMARKS.md and, with ``--json``, the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from benchlib import cpu_model, git_commit, write_section


class TimedRefiner:
    """Wraps a refiner's two halves to time them (CUDA is synchronised before each clock read)."""

    def __init__(self, refiner, device: torch.device):
        self.refiner, self.device = refiner, device
        self.inputs_s = self.network_s = 0.0
        inputs, predict = refiner.inputs, refiner.predict

        def timed_inputs(*a, **k):
            t0 = time.perf_counter()
            out = inputs(*a, **k)
            self.inputs_s += time.perf_counter() - t0
            return out

        def timed_predict(*a, **k):
            self._sync()
            t0 = time.perf_counter()
            out = predict(*a, **k)
            self._sync()
            self.network_s += time.perf_counter() - t0
            return out

        refiner.inputs, refiner.predict = timed_inputs, timed_predict

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, image, K, initial, iterations: int) -> tuple[float, float, float]:
        self.inputs_s = self.network_s = 0.0
        self._sync()
        t0 = time.perf_counter()
        self.refiner.refine(image, K, initial, iterations)
        self._sync()
        return time.perf_counter() - t0, self.inputs_s, self.network_s


def main(argv=None) -> int:
    from dsc_pose_core.data import bop_io
    from dsc_pose_core.deepim.noise import PoseNoiseConfig, sample_pose_noise
    from dsc_pose_core.deepim.refiner import DeepImRefiner
    from dsc_pose_core.deepim.zoom import ZoomConfig
    from dsc_pose_core.models.deepim import DeepImNet
    from dsc_pose_core.objects.registry import ObjectRegistry
    from dsc_pose_core.render import FastRenderer
    from dsc_pose_core.training.deepim import model_from_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--zoom", default="128x96", help="zoom-in size WxH (CPU config 128x96, paper 640x480)")
    p.add_argument("--width", type=float, default=0.25, help="network width (1.0 = FlowNetS); ignored with --checkpoint")
    p.add_argument("--checkpoint", help="DeepIM checkpoint (its width and zoom-in override --width / --zoom)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--objects", default="config/objects.yaml")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    zw, zh = (int(v) for v in args.zoom.lower().split("x"))
    if args.checkpoint:
        model, payload = model_from_checkpoint(args.checkpoint, device=device)
        z = payload["zoom"]
        zoom, units = ZoomConfig(z["width"], z["height"], z["expand"]), payload.get("translation_units", "normalized")
        width = float(payload["model"]["width"])
    else:
        width, units = args.width, "zoom"
        zoom = ZoomConfig(zw, zh)
        model = DeepImNet(width).to(device).eval()
    registry = ObjectRegistry.from_yaml(bop_io.repo_root() / args.objects)
    lmo = bop_io.default_lmo_dir()
    scene = bop_io.select_scene_images(lmo, 2, "test", "val")
    rng = np.random.default_rng(0)
    noise = PoseNoiseConfig()
    renderer = FastRenderer(zoom.width, zoom.height)
    for o in registry.ids:
        renderer.add_object(o, registry[o].mesh)
    refiner = DeepImRefiner(model, renderer, {o: registry[o].mesh.vertices for o in registry.ids}, zoom,
                            device=device, translation_units=units)
    timer = TimedRefiner(refiner, device)
    per_object, inputs_share, network_share, single = [], [], [], []
    n_objects = []
    frames = 0
    for im_id in scene.im_ids:
        initial = []
        for gt in scene.gt[im_id]:
            if gt.obj_id in registry:
                R, t = sample_pose_noise(rng, gt.R, gt.t, noise)
                initial.append((gt.obj_id, R, t))
        if not initial:
            continue
        image = bop_io.read_rgb(bop_io.find_rgb(scene.scene_path, im_id))
        K = scene.cameras[im_id].K
        if frames == 0:  # warm-up: GL programs, cuDNN algorithm choice
            timer.run(image, K, initial, 1)
            timer.run(image, K, initial[:1], 1)
        total, inputs_s, network_s = timer.run(image, K, initial, args.iterations)
        per_object.append(total / args.iterations / len(initial))
        inputs_share.append(inputs_s / args.iterations / len(initial))
        network_share.append(network_s / args.iterations / len(initial))
        single.append(timer.run(image, K, initial[:1], args.iterations)[0] / args.iterations)
        n_objects.append(len(initial))
        frames += 1
        if frames >= args.frames:
            break
    renderer.close()
    ms = lambda v: float(np.median(v) * 1e3)  # noqa: E731
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    numbers = {"device": args.device, "gpu": gpu, "cpu": cpu_model(), "torch": torch.__version__,
               "threads": args.threads, "zoom": [zoom.width, zoom.height], "width": width,
               "frames": frames, "objects_per_frame_median": float(np.median(n_objects)),
               "iterations": args.iterations, "per_object_per_iteration_ms": ms(per_object),
               "inputs_ms": ms(inputs_share), "network_ms": ms(network_share),
               "single_object_per_iteration_ms": ms(single), "commit": git_commit(),
               "checkpoint": args.checkpoint or "untrained (timing only)"}
    command = (f"python bench/bench_deepim_speed.py --device {args.device} --zoom {zoom.width}x{zoom.height} "
               f"--width {width:g} --frames {args.frames} --iterations {args.iterations} --threads {args.threads}"
               + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""))
    tag = "cuda" if device.type == "cuda" else "cpu"
    key = f"deepim_speed_{tag}_{zoom.width}x{zoom.height}"  # one section per device and resolution
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    section = "\n".join([
        start,
        f"## DeepIM refinement time per object per iteration, {tag.upper()}, {zoom.width}x{zoom.height} "
        "(`bench/bench_deepim_speed.py`)",
        "",
        f"- Machine: {cpu_model()}, {gpu}, torch {torch.__version__} ({args.threads} CPU thread(s)), "
        f"Python {platform.python_version()}; commit {numbers['commit']}",
        f"- Command: `{command}`",
        f"- Data: LM-O scene 2 `val`, first {frames} frames, every visible LM-O object (median "
        f"{numbers['objects_per_frame_median']:g} per frame) from its GT pose with appendix B.1 noise (seed 0); "
        f"{args.iterations} iterations, one batch of all objects per iteration (as the pose node)",
        f"- Network: FlowNetS width {width:g}, zoom-in {zoom.width}x{zoom.height}; weights: {numbers['checkpoint']}",
        "- Medians over frames; inputs = OpenGL render + zoom-in (CPU side), network = one forward pass.",
        "",
        "| zoom-in | width | per object per iteration (ms) | inputs (ms) | network (ms) | one object alone, per iteration (ms) |",
        "|---|---|---|---|---|---|",
        f"| {zoom.width}x{zoom.height} | {width:g} | {numbers['per_object_per_iteration_ms']:.1f} | "
        f"{numbers['inputs_ms']:.1f} | {numbers['network_ms']:.1f} | {numbers['single_object_per_iteration_ms']:.1f} |",
        end,
    ])
    write_section(section, start, end)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers | {"section": section}, f, indent=1)
    print(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
