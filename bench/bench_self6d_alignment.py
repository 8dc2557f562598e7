"""Self6D's Fig. 3 in miniature: does minimising the self-supervised loss over the pose alone (no
network) bring a perturbed pose back to the truth, on target-domain RGB-D crops?

    python bench/bench_self6d_alignment.py [--n 32] [--steps 60]

For held-out target-domain crops (``out/self6d_data``, made by ``bench/bench_self6d.py``'s runs) the
ground-truth pose is rotated about a random axis by 10, 20 or 40 degrees (and shifted 1 cm sideways,
3 cm in depth), then (R, t) are optimised with Adam on L_self (eq. 4-11, the weights of
config/train/self6d_target_cpu.yaml) with M^P = the ground-truth visible mask (the best mask the
network could predict) or with the mask term and the visual terms only (no depth). Reports median
rotation / translation errors before and after. Writes its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, cpu_model, git_commit, write_section  # noqa: E402

START, END = "<!-- bench_self6d_alignment:start -->", "<!-- bench_self6d_alignment:end -->"
TERM_SETS = {"all terms (eq. 4-11)": ("mask", "lab", "ms_ssim", "perceptual", "geom"),
             "mask + geom": ("mask", "geom"),
             "visual only (eq. 4-8, no depth)": ("mask", "lab", "ms_ssim", "perceptual")}


def main(argv=None) -> int:
    from dsc_pose_core.data.roi_crops import crops_path, load_crops
    from dsc_pose_core.geometry.camera import crop_intrinsics
    from dsc_pose_core.geometry.rotations import axis_angle_to_matrix, rotation_angle_between
    from dsc_pose_core.losses import self6d as L
    from dsc_pose_core.models.self6d import model_from_checkpoint as load_self6d
    from dsc_pose_core.training import self6d as S
    from dsc_pose_core.training.cli import parse_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="crops")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoint", default="out/self6d_target/checkpoints/self6d_synthetic.pt",
                        help="the synthetic stage's network (its trunk gives eq. 7's features with "
                             "--perceptual-features synthetic_stage)")
    parser.add_argument("--perceptual-features", choices=("imagenet", "synthetic_stage"), default="imagenet",
                        help="eq. 7's frozen network (self6d.loss.perceptual_features)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = parse_config(REPO / "config/train/self6d_target_cpu.yaml")
    cfg = config.self6d
    cfg.loss.perceptual_features = args.perceptual_features
    obj = S.load_object(cfg, 500)
    d = cfg.data
    path = crops_path(REPO / d.cache_dir, "target", cfg.obj_id, d.test_images, d.test_seed, cfg.model.input_size,
                      cfg.model.context)
    data = S.to_tensors(load_crops(path))
    batch = {k: v[:args.n] for k, v in data.items()}
    trainer = S.Self6dTrainer(cfg, obj)
    model, _ = load_self6d(REPO / args.checkpoint)
    trainer.model = model
    trainer.freeze_perceptual_features()
    size = cfg.model.input_size
    K_crop = crop_intrinsics(batch["K"], batch["window"], size, size)
    observed = batch["rgb"].float() / 255.0
    mask_pred = (batch["mask"] > 127).float()
    depth = batch["depth"].float()
    gen = torch.Generator().manual_seed(0)
    axes = torch.nn.functional.normalize(torch.randn(args.n, 3, generator=gen), dim=1)
    shift = torch.tensor([0.01, 0.0, 0.03]) * torch.sign(torch.randn(args.n, 1, generator=gen))
    rows = []
    for degrees in (10, 20, 40):
        for label, terms in TERM_SETS.items():
            t0 = time.perf_counter()
            d_rot = (axes * np.radians(degrees)).clone().requires_grad_(True)
            d_t = shift.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([d_rot, d_t], lr=0.01)

            def errors():
                with torch.no_grad():
                    R = axis_angle_to_matrix(d_rot) @ batch["R"]
                    return (float(torch.rad2deg(rotation_angle_between(R, batch["R"])).median()),
                            float(d_t.norm(dim=1).median() * 100))

            before = errors()
            for _ in range(args.steps):
                R = axis_angle_to_matrix(d_rot) @ batch["R"]
                render = trainer.renderer.render_rgbd(K_crop, 0, R, batch["t"] + d_t, size, size)
                parts = {
                    "mask": lambda: L.recalibrated_mask_loss(render.silhouette, mask_pred),
                    "lab": lambda: L.lab_loss(observed, render.rgb, mask_pred, render.silhouette.detach()),
                    "ms_ssim": lambda: trainer.ms_ssim(observed, render.rgb, mask_pred),
                    "perceptual": lambda: L.perceptual_loss(trainer.feature_net, observed, render.rgb, mask_pred),
                    "geom": lambda: L.geometric_loss(depth, mask_pred, render.depth, (render.depth > 0).float(), K_crop,
                                                     obj.diameter),
                }
                loss = trainer.total_self({name: parts[name]() for name in terms})  # eq. (8) + eta L_geom, per crop
                optimiser.zero_grad()
                loss.sum().backward()
                optimiser.step()
            after = errors()
            rows.append((degrees, label, before, after, time.perf_counter() - t0))
            print(rows[-1], flush=True)
    lines = [START, "## Self6D: self-supervised loss vs pose error (self6d Fig. 3 in miniature)", "",
             f"Machine: {cpu_model()}, 1 torch thread. Commit: {git_commit()}. Command: "
             f"`python bench/bench_self6d_alignment.py --n {args.n} --steps {args.steps} "
             f"--perceptual-features {args.perceptual_features}`. Data: {args.n} held-out "
             f"target-domain crops of object {cfg.obj_id} ({path.name}); M^P = ground-truth visible mask; "
             "perceptual features: "
             + (f"`{args.checkpoint}`'s trunk" if args.perceptual_features == "synthetic_stage" else
                "the ImageNet EfficientNet-Lite0") + ". The pose alone is optimised (Adam, lr 0.01, "
             f"{args.steps} steps) from the truth rotated by the given angle about a random axis and shifted "
             "(1 cm sideways, 3 cm in depth).", "",
             "| start rotation error | terms | median rot err before -> after (deg) | median trans err before -> after (cm) | seconds |",
             "|---|---|---|---|---|"]
    for degrees, label, before, after, seconds in rows:
        lines.append(f"| {degrees} deg | {label} | {before[0]:.1f} -> {after[0]:.1f} | {before[1]:.2f} -> {after[1]:.2f} | {seconds:.0f} |")
    lines.append(END)
    write_section("\n".join(lines), START, END)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
