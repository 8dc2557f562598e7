"""DeepIM refinement time per object per iteration (deepim sec. 4.1 Testing; issue: "refinement time
per object per iteration at the CPU resolution (median), and on GPU at 480x640").

    python bench/bench_deepim_speed.py --device cpu --zoom 128x96 --width 0.25 --render-faces 0,4000  # CPU
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

    def run(self, image, K, initial, iterations: int, boxes) -> tuple[float, float, float]:
        self.inputs_s = self.network_s = 0.0
        self._sync()
        t0 = time.perf_counter()
        self.refiner.refine(image, K, initial, iterations, boxes=boxes)
        self._sync()
        return time.perf_counter() - t0, self.inputs_s, self.network_s


def main(argv=None) -> int:
    from dsc_pose_core.data import bop_io
    from dsc_pose_core.deepim.noise import PoseNoiseConfig, sample_pose_noise
    from dsc_pose_core.deepim.refiner import DeepImRefiner, make_zoom_renderer
    from dsc_pose_core.data.boxes import projected_box
    from dsc_pose_core.deepim.zoom import ZoomConfig
    from dsc_pose_core.models.deepim import DeepImNet
    from dsc_pose_core.objects.registry import ObjectRegistry
    from dsc_pose_core.models.deepim import model_from_checkpoint
    from dsc_pose_core.typed_config import from_dict

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--zoom", default="128x96", help="zoom-in size WxH (CPU config 128x96, paper 640x480)")
    p.add_argument("--width", type=float, default=0.25, help="network width (1.0 = FlowNetS); ignored with --checkpoint")
    p.add_argument("--render-faces", default="0",
                   help="comma-separated mesh face budgets of the zoom-in renders (0 = full meshes), timed "
                        "side by side on the same frames; ignored with --checkpoint (its own setting)")
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
        model, loaded = model_from_checkpoint(args.checkpoint, device=device)
        zooms = [from_dict(ZoomConfig, loaded.inference["zoom"], "zoom")]
        units = loaded.inference.get("translation_units", "normalized")
        observed_box = loaded.inference.get("observed_box", "rendered")
        width = float(loaded.network["width"])
        encoder = loaded.network.get("encoder", "flownets")
    else:
        width, units, observed_box, encoder = args.width, "zoom", "rendered", "flownets"
        zooms = [ZoomConfig(zw, zh, render_faces=int(f)) for f in args.render_faces.split(",")]
        model = DeepImNet(width).to(device).eval()
    zoom = zooms[0]
    registry = ObjectRegistry.from_yaml(bop_io.repo_root() / args.objects)
    lmo = bop_io.default_lmo_dir()
    scene = bop_io.select_scene_images(lmo, 2, "test", "val")
    rng = np.random.default_rng(0)
    noise = PoseNoiseConfig()
    meshes = {o: registry[o].mesh for o in registry.ids}
    renderers = [make_zoom_renderer(meshes, z) for z in zooms]
    timers = [TimedRefiner(DeepImRefiner(model, r, {o: m.vertices for o, m in meshes.items()}, z, device=device,
                                         translation_units=units, observed_box=observed_box), device)
              for r, z in zip(renderers, zooms)]
    # per setting: per object per iteration, inputs, network, one object alone
    times = [{"per_object": [], "inputs": [], "network": [], "single": []} for _ in zooms]
    n_objects = []
    frames = 0
    for im_id in scene.im_ids:
        initial, boxes = [], []
        K = scene.cameras[im_id].K
        for gt in scene.gt[im_id]:
            if gt.obj_id in registry:
                R, t = sample_pose_noise(rng, gt.R, gt.t, noise)
                initial.append((gt.obj_id, R, t))
                # for networks that read a detection box: the GT pose's projected box stands in
                boxes.append(projected_box(meshes[gt.obj_id].vertices, gt.R, gt.t, K))
        if not initial:
            continue
        image = bop_io.read_rgb(bop_io.find_rgb(scene.scene_path, im_id))
        for timer, record in zip(timers, times):  # the settings alternate frame by frame: same load
            if frames == 0:  # warm-up: GL programs, cuDNN algorithm choice
                timer.run(image, K, initial, 1, boxes)
                timer.run(image, K, initial[:1], 1, boxes[:1])
            total, inputs_s, network_s = timer.run(image, K, initial, args.iterations, boxes)
            scale = args.iterations * len(initial)
            record["per_object"].append(total / scale)
            record["inputs"].append(inputs_s / scale)
            record["network"].append(network_s / scale)
            record["single"].append(timer.run(image, K, initial[:1], args.iterations, boxes[:1])[0] / args.iterations)
        n_objects.append(len(initial))
        frames += 1
        if frames >= args.frames:
            break
    for r in renderers:
        r.close()
    ms = lambda v: float(np.median(v) * 1e3)  # noqa: E731
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    rows = [{"render_faces": z.render_faces, "per_object_per_iteration_ms": ms(rec["per_object"]),
             "inputs_ms": ms(rec["inputs"]), "network_ms": ms(rec["network"]),
             "single_object_per_iteration_ms": ms(rec["single"]),
             # per-frame ratio to the first setting, median over frames (same frames, same load)
             "ratio_to_first": float(np.median(np.asarray(rec["per_object"]) / np.asarray(times[0]["per_object"])))}
            for z, rec in zip(zooms, times)]
    numbers = {"device": args.device, "gpu": gpu, "cpu": cpu_model(), "torch": torch.__version__,
               "threads": args.threads, "zoom": [zoom.width, zoom.height], "width": width, "encoder": encoder,
               "frames": frames, "objects_per_frame_median": float(np.median(n_objects)),
               "iterations": args.iterations, "rows": rows, "commit": git_commit(),
               "checkpoint": args.checkpoint or "untrained (timing only)"}
    numbers.update({k: rows[0][k] for k in ("per_object_per_iteration_ms", "inputs_ms", "network_ms",
                                             "single_object_per_iteration_ms")})
    faces_arg = "" if args.checkpoint else f" --render-faces {','.join(str(z.render_faces) for z in zooms)}"
    command = (f"python bench/bench_deepim_speed.py --device {args.device} --zoom {zoom.width}x{zoom.height} "
               f"--width {width:g}{faces_arg} --frames {args.frames} --iterations {args.iterations} "
               f"--threads {args.threads}" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""))
    tag = "cuda" if device.type == "cuda" else "cpu"
    # one section per device, resolution and encoder
    key = f"deepim_speed_{tag}_{zoom.width}x{zoom.height}" + ("" if encoder == "flownets" else f"_{encoder}")
    network = (f"FlowNetS width {width:g}" if encoder == "flownets" else
               f"siamese {encoder} (ImageNet trunk, fusion width {width:g})")
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    faces = lambda f: "full meshes" if f == 0 else f"{f} faces"  # noqa: E731
    section = "\n".join([
        start,
        f"## DeepIM refinement time per object per iteration, {tag.upper()}, {zoom.width}x{zoom.height}"
        + ("" if encoder == "flownets" else f", {encoder}") + " (`bench/bench_deepim_speed.py`)",
        "",
        f"- Machine: {cpu_model()}, {gpu}, torch {torch.__version__} ({args.threads} CPU thread(s)), "
        f"Python {platform.python_version()}; commit {numbers['commit']}",
        f"- Command: `{command}`",
        f"- Data: LM-O scene 2 `val`, first {frames} frames, every visible LM-O object (median "
        f"{numbers['objects_per_frame_median']:g} per frame) from its GT pose with appendix B.1 noise (seed 0); "
        f"{args.iterations} iterations, one batch of all objects per iteration (as the pose node)",
        f"- Network: {network}, zoom-in {zoom.width}x{zoom.height}; weights: {numbers['checkpoint']}",
        "- Medians over frames; inputs = OpenGL render + zoom-in (CPU side), network = one forward pass; "
        "render meshes = the face budget of the zoom-in renders (`deepim.zoom.render_faces`); the settings "
        "alternate frame by frame, and the ratio is the median per-frame ratio to the first row.",
        "",
        "| zoom-in | width | render meshes | per object per iteration (ms) | inputs (ms) | network (ms) "
        "| one object alone, per iteration (ms) | ratio to first row |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {zoom.width}x{zoom.height} | {width:g} | {faces(r['render_faces'])} | "
          f"{r['per_object_per_iteration_ms']:.1f} | {r['inputs_ms']:.1f} | {r['network_ms']:.1f} | "
          f"{r['single_object_per_iteration_ms']:.1f} | {r['ratio_to_first']:.2f} |" for r in rows],
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
