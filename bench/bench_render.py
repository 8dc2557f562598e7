"""Renderer benchmark: speed of both renderers, LM-O val ground-truth box agreement, and pose
recovery by gradient descent through the differentiable silhouette.

    python bench/bench_render.py [--lmo ../shared/data/lmo] [--repeats 7] [--no-write]

Writes the section "Renderers" of docs/BENCHMARKS.md (between <!-- bench_render:start/end -->
markers; other sections are kept). Uses only the LM-O ``val`` split. Takes about 5 minutes on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsc_pose_core.geometry import (axis_angle_to_matrix, crop_intrinsics, nearest_rotation,  # noqa: E402
                                    rotation_angle_between)
from dsc_pose_core.objects import load_mesh  # noqa: E402
from dsc_pose_core.render import DifferentiableRenderer, FastRenderer  # noqa: E402
from dsc_pose_core.render.fit import fit_pose_to_silhouette  # noqa: E402

OBJECTS = (1, 5, 6, 8, 9, 10, 11, 12)
NAMES = {1: "ape", 5: "can", 6: "cat", 8: "driller", 9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher"}
DECIMATED_FACES = 2000




def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _rotation(values, orthonormal):
    matrix = np.asarray(values, dtype=np.float64).reshape(3, 3)
    return nearest_rotation(torch.from_numpy(matrix)).numpy() if orthonormal else matrix


class Scene:
    def __init__(self, root: Path):
        scene = root / "test" / "000002"
        self.gt = json.loads((scene / "scene_gt.json").read_text())
        self.info = json.loads((scene / "scene_gt_info.json").read_text())
        self.camera = json.loads((scene / "scene_camera.json").read_text())
        self.val_ids = json.loads((root / "splits.json").read_text())["val"]

    def K(self, im_id):
        return np.asarray(self.camera[str(im_id)]["cam_K"], float).reshape(3, 3)

    def poses(self, im_id, orthonormal=True):
        # LM-O's rotations are orthonormal only to ~5e-4: project onto SO(3) (else arccos-based
        # angle errors hide up to ~2 deg)
        return [(int(g["obj_id"]), _rotation(g["cam_R_m2c"], orthonormal),
                 np.asarray(g["cam_t_m2c"], float) / 1000.0) for g in self.gt[str(im_id)]]

    def pose_of(self, obj_id):
        for im_id in self.val_ids:
            for o, R, t in self.poses(im_id):
                if o == obj_id:
                    return self.K(im_id), R, t
        raise KeyError(obj_id)


def box_iou(a, b):
    ax2, ay2, bx2, by2 = a[..., 0] + a[..., 2], a[..., 1] + a[..., 3], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def crop_K(K, t, half, size):
    c = K @ t
    c = c[:2] / c[2]
    box = torch.tensor([c[0] - half, c[1] - half, c[0] + half, c[1] + half], dtype=torch.float64)
    return crop_intrinsics(torch.tensor(K), box, size, size).numpy()


def bench_fast_fps(scene, meshes, repeats):
    """Per object: one object at 640x480 at its first val GT pose, RGB + depth + ids read back."""
    rows = []
    with FastRenderer(640, 480) as renderer:
        for obj_id in OBJECTS:
            renderer.add_object(obj_id, meshes[obj_id])
            K, R, t = scene.pose_of(obj_id)
            ms = median_ms(lambda: renderer.render(K, [(obj_id, R, t)]), repeats * 3)
            ms_nocull = None
            if renderer._objects[obj_id][3]:  # noqa: SLF001 - report the no-culling cost too
                renderer.add_object(obj_id, meshes[obj_id], cull_back_faces=False)
                ms_nocull = median_ms(lambda: renderer.render(K, [(obj_id, R, t)]), repeats * 3)
                renderer.add_object(obj_id, meshes[obj_id])
            rows.append((obj_id, len(meshes[obj_id].faces), ms, ms_nocull))
        im_id = scene.val_ids[0]
        all_ms = median_ms(lambda: renderer.render(scene.K(im_id), scene.poses(im_id)), repeats)
        gl_name = renderer.gl_renderer
    return rows, all_ms, len(scene.poses(im_id)), gl_name


def bench_matrix(scene, meshes, decimated, repeats):
    """Both renderers x (640x480, 128x128 crop) x (batch 1, 8) x (full, decimated) for the can."""
    obj_id = 5
    K, R, t = scene.pose_of(obj_id)
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    Rs = np.stack([Rotation.from_rotvec(rng.normal(0, 0.05, 3)).as_matrix() @ R for _ in range(8)])
    ts = np.stack([t + rng.normal(0, 0.005, 3) for _ in range(8)])
    K_crop = crop_K(K, t, 110.0, 128)
    sizes = {"640x480": (K, 640, 480), "128x128 crop": (K_crop, 128, 128)}
    results = []
    for mesh_name, mesh in (("full", meshes[obj_id]), (f"decimated {DECIMATED_FACES}", decimated[obj_id])):
        fast = FastRenderer(640, 480)
        fast.add_object(obj_id, mesh)
        diff = DifferentiableRenderer(faces_per_pixel=50, sigma_px=1.0)
        diff.add_object(obj_id, mesh)
        for size_name, (Kx, w, h) in sizes.items():
            for batch in (1, 8):
                row = {"mesh": f"{mesh_name} ({len(mesh.faces)} f)", "size": size_name, "batch": batch}
                row["fast"] = median_ms(lambda: fast.render_batch(Kx, obj_id, Rs[:batch], ts[:batch], w, h),
                                        repeats)
                Kt = torch.tensor(Kx, dtype=torch.float32).expand(batch, 3, 3)
                Rt = torch.tensor(Rs[:batch], dtype=torch.float32)
                tt = torch.tensor(ts[:batch], dtype=torch.float32)
                # PyTorch3D's CPU rasterizer costs ~ H x W x faces: time the cheap combinations with
                # repeats, the expensive ones once, and skip those that would take minutes.
                cost = w * h * len(mesh.faces) * batch
                if cost > 8e8:
                    row.update(depth=None, soft=None, soft_bwd=None, note="skipped (estimated > 1 min per call)")
                    results.append(row)
                    print(row, flush=True)
                    continue
                reps, warm = (repeats, 1) if cost < 1e8 else (1, 0)
                row["note"] = "" if reps > 1 else "1 repetition"
                row["depth"] = median_ms(lambda: diff.depth(Kt, obj_id, Rt, tt, w, h), reps, warm)
                with torch.no_grad():
                    row["soft"] = median_ms(lambda: diff.silhouette(Kt, obj_id, Rt, tt, w, h), reps, warm)

                def soft_bwd(method="fast"):
                    R_var = Rt.clone().requires_grad_(True)
                    diff.silhouette(Kt, obj_id, R_var, tt, w, h, method=method).sum().backward()

                row["soft_bwd"] = median_ms(soft_bwd, reps, warm)
                if cost < 1e8 and batch == 1:
                    row["soft_bwd_stock"] = median_ms(lambda: soft_bwd("pytorch3d"), 1, 0)
                results.append(row)
                print(row, flush=True)
        fast.close()
    return results


def bench_boxes(scene, meshes):
    """All val frames, all objects rendered together; visible boxes vs scene_gt_info."""
    shift = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    out = {}
    with FastRenderer(640, 480) as renderer:
        for obj_id in OBJECTS:
            renderer.add_object(obj_id, meshes[obj_id])
        for name, A in (("OpenCV K", np.eye(3)), ("K shifted -0.5 px (BOP's convention)", shift)):
            ious, low = [], []
            for im_id in scene.val_ids:
                poses = scene.poses(im_id, orthonormal=False)
                render = renderer.render(A @ scene.K(im_id), poses, rgb=False)
                gt = np.asarray([i["bbox_visib"] for i in scene.info[str(im_id)]], float)
                iou = box_iou(render.visible_boxes().astype(float), gt)
                ious.extend(iou)
                low.extend((im_id, NAMES[poses[i][0]], round(float(iou[i]), 2)) for i in np.nonzero(iou < 0.5)[0])
            ious = np.asarray(ious)
            out[name] = dict(n=len(ious), mean=ious.mean(), median=float(np.median(ious)),
                             below_05=int((ious < 0.5).sum()), below_09=int((ious < 0.9).sum()), low=low)
        # full-object boxes (bbox_obj) with the BOP shift, in a margin canvas
        exact, total = 0, 0
        for im_id in scene.val_ids:
            K = shift @ scene.K(im_id)
            K[:2, 2] += 200
            for index, pose in enumerate(scene.poses(im_id, orthonormal=False)):
                box = renderer.render(K, [pose], 1040, 880, rgb=False).visible_boxes()[0] - [200, 200, 0, 0]
                exact += int(np.array_equal(box, scene.info[str(im_id)][index]["bbox_obj"]))
                total += 1
        out["bbox_obj_exact"] = (exact, total)
    return out


def bench_gradient(scene, meshes, size=64, faces=800, fpp=30, sigma_px=1.0, steps=50):
    """Per object: from a 10 deg / 2 cm perturbation of its first val GT pose, 50 Adam steps on Dice."""
    rows = []
    fast = FastRenderer(size, size)
    for obj_id in OBJECTS:
        K, R, t = scene.pose_of(obj_id)
        mesh = meshes[obj_id].decimated(faces)
        extent = np.ptp(meshes[obj_id].vertices, axis=0).max()
        K_crop = torch.tensor(crop_K(K, t, 0.75 * extent * K[0, 0] / t[2], size), dtype=torch.float32)
        renderer = DifferentiableRenderer(faces_per_pixel=fpp, sigma_px=sigma_px)
        renderer.add_object(obj_id, mesh)
        fast.add_object(obj_id, meshes[obj_id])
        R_gt = torch.tensor(R, dtype=torch.float32)[None]
        t_gt = torch.tensor(t, dtype=torch.float32)[None]
        generator = torch.Generator().manual_seed(obj_id)
        axis = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
        direction = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
        R0 = axis_angle_to_matrix(axis * np.deg2rad(10.0))[None] @ R_gt
        t0 = t_gt + 0.02 * direction
        with torch.no_grad():
            soft_target = renderer.silhouette(K_crop, obj_id, R_gt, t_gt, size, size)
        hard_target = torch.tensor(fast.render(K_crop.numpy(), [(obj_id, R, t)], size, size, rgb=False).mask,
                                   dtype=torch.float32)[None]

        def err(R_est, t_est):
            return (float(np.rad2deg(rotation_angle_between(R_est.double(), R_gt.double()).item())),
                    100 * float((t_est - t_gt).norm()))

        row = {"obj": NAMES[obj_id], "start": err(R0, t0)}
        sharp = DifferentiableRenderer(faces_per_pixel=fpp, sigma_px=0.25)
        sharp.add_object(obj_id, mesh)
        for name, target, rend in (("soft", soft_target, renderer), ("hard", hard_target, renderer),
                                   ("hard_sharp", hard_target, sharp)):
            start = time.perf_counter()
            fit = fit_pose_to_silhouette(rend, K_crop, obj_id, R0, t0, target, size, size, steps=steps)
            row[name] = err(fit.R, fit.t) + (fit.losses[0].item(), fit.losses[-1].item(), time.perf_counter() - start)
        rows.append(row)
        print(row, flush=True)
    fast.close()
    return rows, dict(size=size, faces=faces, fpp=fpp, sigma_px=sigma_px, steps=steps)


RENDER_START, RENDER_END = "<!-- bench_render:start -->", "<!-- bench_render:end -->"


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"



def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lmo", default=os.environ.get("DSC_POSE_LMO", str(REPO.parent / "shared" / "data" / "lmo")))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.lmo)
    scene = Scene(root)
    t_start = time.time()
    meshes = {o: load_mesh(root / "models" / f"obj_{o:06d}.ply") for o in OBJECTS}
    decimated = {o: meshes[o].decimated(DECIMATED_FACES) for o in (5,)}

    fps_rows, all_ms, n_all, gl_name = bench_fast_fps(scene, meshes, args.repeats)
    print("fast fps", fps_rows, all_ms, flush=True)
    boxes = bench_boxes(scene, meshes)
    print("boxes", boxes, flush=True)
    grad_rows, grad_cfg = bench_gradient(scene, meshes)
    matrix = bench_matrix(scene, meshes, decimated, args.repeats)
    elapsed = time.time() - t_start

    lines = ["## Renderers (`bench/bench_render.py`)", ""]
    lines += [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, no GPU; OpenGL: {gl_name} (EGL, moderngl); "
        f"torch {torch.__version__} with {args.threads} threads; Python {platform.python_version()}",
        f"- Command: `python bench/bench_render.py` ({elapsed / 60:.1f} min)",
        "- Data: LM-O scene 2, split `val` (50 frames, "
        f"{sum(len(scene.gt[str(i)]) for i in scene.val_ids)} object instances); meshes from `models/`",
        f"- Commit: {git_commit()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "- Timings are medians of the repeats on a shared machine (other jobs were running); "
        "the fast renderer's times include reading back RGB, depth and the instance map.",
        "",
        "### Fast renderer, one object at 640x480 (first val GT pose of each object)",
        "",
        "| object | faces | ms / frame | frames/s | ms without back-face culling |",
        "|---|---|---|---|---|",
    ]
    for obj_id, faces, ms, ms_nocull in fps_rows:
        culled = fmt(ms_nocull) if ms_nocull is not None else "(not culled: mesh not closed/consistent)"
        lines.append(f"| {NAMES[obj_id]} | {faces} | {ms:.1f} | {1000 / ms:.0f} | {culled} |")
    lines += ["", f"All {n_all} objects of val frame {scene.val_ids[0]} in one frame (mutual occlusion): "
              f"{all_ms:.1f} ms ({1000 / all_ms:.0f} frames/s).", ""]

    lines += [
        "### Both renderers, can (obj 5), ms per call (batch of poses)",
        "",
        "fast = FastRenderer.render_batch (sequential, RGB+depth+ids read back); PyTorch3D (CPU, "
        "bin_size 0): hard depth; soft silhouette (faces_per_pixel 50, sigma 1 px) forward without "
        "grad, and forward+backward with the vectorised silhouette (`method=\"fast\"`) and with "
        "PyTorch3D's own autograd (`method=\"pytorch3d\"`, batch 1 of the cheap sizes only).",
        "",
        "| mesh | size | batch | fast | PyTorch3D depth | soft fwd | soft fwd+bwd | soft fwd+bwd (stock) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in matrix:
        lines.append(f"| {r['mesh']} | {r['size']} | {r['batch']} | {fmt(r['fast'])} | {fmt(r.get('depth'), 0)} | "
                     f"{fmt(r.get('soft'), 0)} | {fmt(r.get('soft_bwd'), 0)} | {fmt(r.get('soft_bwd_stock'), 0)} | "
                     f"{r.get('note', '')} |")

    lines += ["", "### Ground-truth boxes: all objects of each val frame rendered together vs `scene_gt_info.json`", "",
              "| camera | instances | mean IoU (bbox_visib) | median | IoU < 0.9 | IoU < 0.5 |", "|---|---|---|---|---|---|"]
    for name in ("OpenCV K", "K shifted -0.5 px (BOP's convention)"):
        b = boxes[name]
        lines.append(f"| {name} | {b['n']} | {b['mean']:.3f} | {b['median']:.3f} | {b['below_09']} | {b['below_05']} |")
    exact, total = boxes["bbox_obj_exact"]
    low = boxes["OpenCV K"]["low"]
    lines += [
        "",
        f"- Full-object boxes (`bbox_obj`, each object alone, 200 px margin) with K shifted by -0.5 px: "
        f"{exact} / {total} identical to BOP's. BOP's ground-truth renderer samples pixel i at i + 0.5; this "
        "package uses the OpenCV convention (pixel i at i), so its masks sit half a pixel right/down of BOP's.",
        f"- Instances with IoU < 0.5 (OpenCV K): {len(low)}: "
        + ", ".join(f"frame {i} {n} ({v})" for i, n, v in low)
        + ". bbox_visib comes from the real depth image; the unmodelled bench vise and sensor depth "
        "holes occlude these objects in reality but not in the render.",
        "",
    ]

    lines += [
        "### Pose by gradient descent on Dice through the differentiable silhouette",
        "",
        f"Each object at its first val GT pose, perturbed by 10 deg about a random axis and 2 cm in a random "
        f"direction; {grad_cfg['steps']} Adam steps (`render.fit.fit_pose_to_silhouette`, lr 0.02 rad / 4 mm), "
        f"{grad_cfg['size']} px crop, mesh decimated to {grad_cfg['faces']} faces, faces_per_pixel "
        f"{grad_cfg['fpp']}, sigma {grad_cfg['sigma_px']} px. Target *soft*: the soft silhouette of the GT pose "
        "(checks the gradients; the optimum is the GT). Target *hard*: the fast renderer's binary mask of the "
        "full mesh (as with a real mask).",
        "",
        "| object | start deg / cm | soft target: end deg / cm | Dice loss | s | hard target: end deg / cm | "
        "Dice loss | s | hard target, sigma 0.25 px: end deg / cm | Dice loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in grad_rows:
        s, h, hs = r["soft"], r["hard"], r["hard_sharp"]
        lines.append(f"| {r['obj']} | {r['start'][0]:.1f} / {r['start'][1]:.2f} | {s[0]:.2f} / {s[1]:.2f} | "
                     f"{s[2]:.3f} -> {s[3]:.3f} | {s[4]:.0f} | {h[0]:.2f} / {h[1]:.2f} | {h[2]:.3f} -> {h[3]:.3f} | "
                     f"{h[4]:.0f} | {hs[0]:.2f} / {hs[1]:.2f} | {hs[2]:.3f} -> {hs[3]:.3f} |")
    mean = lambda key, i: np.mean([r[key][i] for r in grad_rows])  # noqa: E731
    lines += ["", f"Mean over objects: start {mean('start', 0):.1f} deg / {mean('start', 1):.2f} cm; soft target end "
              f"{mean('soft', 0):.2f} deg / {mean('soft', 1):.2f} cm; hard target end {mean('hard', 0):.2f} deg / "
              f"{mean('hard', 1):.2f} cm; hard target with sigma 0.25 px end {mean('hard_sharp', 0):.2f} deg / "
              f"{mean('hard_sharp', 1):.2f} cm.", "",
              "The soft silhouette (1 - prod(1 - p) over the faces near a pixel) is wider than the hard mask, "
              "because many faces meet at the contour: at the GT pose its area exceeds the hard mask's by "
              "20-26 % at sigma 1 px, 8-11 % at 0.5 px, 3-4 % at 0.25 px (64 px crops, ape/can/cat). Against a "
              "binary mask the Dice optimum therefore moves the object away from the camera; use a small sigma "
              "(or a soft target) when the depth matters.", ""]
    text = "\n".join(lines)
    if args.no_write:
        print(text)
    else:
        write_section(f"{RENDER_START}\n{text.rstrip()}\n{RENDER_END}", RENDER_START, RENDER_END)
        print(text)


if __name__ == "__main__":
    main()
