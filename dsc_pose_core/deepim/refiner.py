"""DeepIM inference (deepim sec. 3.5, 4.1 Testing): iterative refinement of initial poses.

Every iteration renders each object at its current estimate inside its own zoom-in window (the
observed mask is the rendered mask's box, sec. 4.1), runs the network once on the batch of all
objects of the image and applies the predicted untangled transform (eq. 1-3) to each estimate, with
the focal lengths the network was trained with (``translation_units``: "zoom" = the zoomed-in
camera's, "normalized" = 1; see ``deepim.inputs``). The auxiliary flow and mask heads are not evaluated.

The observed-mask channel (``observed_box``): "rendered" is sec. 4.1's (the rendered mask's box, for
networks trained on dilated GT boxes); "detection" draws the detector's box of each object, for
networks trained with that box in the channel (``deepim.data.observed_box: detection``, recorded in
their checkpoints): a deviation from the paper for a package that always has the detector's box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.untangled import apply_untangled
from .inputs import TRANSLATION_UNITS, build_input
from .zoom import ZoomConfig

OBSERVED_BOX = ("rendered", "detection")


@dataclass
class RefineResult:
    R: np.ndarray  # [N,3,3]
    t: np.ndarray  # [N,3]
    history: list = field(default_factory=list)  # [(R [N,3,3], t [N,3])] after each iteration


def make_zoom_renderer(meshes: dict, zoom: ZoomConfig):
    """A ``FastRenderer`` at the zoom-in size holding ``meshes`` (obj_id -> ObjectMesh), decimated to
    ``zoom.render_faces`` faces when that is > 0: the renderer the refiner must use for a network
    trained with that setting (training renders its zoom-in inputs and flow targets the same way)."""
    from ..render import FastRenderer

    zoom.validate()
    renderer = FastRenderer(zoom.width, zoom.height)
    try:
        for obj_id, mesh in meshes.items():
            renderer.add_object(int(obj_id), mesh.decimated(zoom.render_faces) if zoom.render_faces > 0 else mesh)
    except Exception:
        renderer.close()
        raise
    return renderer


class DeepImRefiner:
    """``DeepImRefiner(model, renderer, vertices, zoom)``: ``vertices`` maps obj_id -> mesh vertices
    [V,3] (metres; their projection gives the rendered mask's box); every obj_id must be added to the
    renderer."""

    def __init__(self, model, renderer, vertices: dict, zoom: ZoomConfig = ZoomConfig(), device="cpu",
                 min_depth: float = 0.05, light=None, translation_units: str = "zoom",
                 observed_box: str = "rendered"):
        if translation_units not in TRANSLATION_UNITS:
            raise ValueError(f"translation_units must be one of {TRANSLATION_UNITS}, got {translation_units!r}")
        if observed_box not in OBSERVED_BOX:
            raise ValueError(f"observed_box must be one of {OBSERVED_BOX}, got {observed_box!r}")
        self.observed_box = observed_box
        self.translation_units = translation_units
        self.focal = None  # [N,2] eq. (3)'s focal lengths of the current iteration (set before predict)
        self.model = model.eval() if model is not None else None
        self.renderer = renderer
        self.vertices = {int(k): np.asarray(v, dtype=np.float64) for k, v in vertices.items()}
        self.zoom = zoom
        self.device = torch.device(device)
        self.min_depth = float(min_depth)
        self.light = light

    @classmethod
    def from_checkpoint(cls, path, meshes: dict, device="cpu") -> "DeepImRefiner":
        """The refiner of a DeepIM checkpoint for ``meshes`` (obj_id -> ObjectMesh; the objects the
        checkpoint was trained for, or all of them when it names none), with its zoom-in renderer
        (decimated as in training), translation units and observed-mask box: everything the
        checkpoint's ``inference`` records. It refines the objects of ``vertices``."""
        from ..models.deepim import model_from_checkpoint
        from ..typed_config import from_dict

        model, checkpoint = model_from_checkpoint(path, device)
        zoom = from_dict(ZoomConfig, checkpoint.inference.get("zoom", {}), "zoom")
        trained = set(checkpoint.obj_ids)
        served = {int(o): m for o, m in meshes.items() if not trained or int(o) in trained}
        refiner = cls(model, None, {o: m.vertices for o, m in served.items()}, zoom, device=device,
                      translation_units=checkpoint.inference.get("translation_units", "normalized"),
                      observed_box=checkpoint.inference.get("observed_box", "rendered"))
        try:
            refiner.renderer = make_zoom_renderer(dict(sorted(served.items())), zoom)
        except Exception as exc:
            raise RuntimeError(f"the zoom-in renderer (OpenGL) did not start: {exc}") from None
        return refiner

    def inputs(self, image, K, obj_ids, R, t, boxes=None):
        """``boxes``: the detectors' boxes (pixel-edge x1, y1, x2, y2) when ``observed_box`` is "detection"."""
        if self.observed_box == "rendered":
            boxes = [None] * len(obj_ids)
        return [build_input(self.renderer, o, self.vertices[int(o)], image, K, R[i], t[i], self.zoom,
                            obs_box=boxes[i], light=self.light) for i, o in enumerate(obj_ids)]

    @torch.no_grad()
    def predict(self, batch: torch.Tensor, obj_ids, R, t) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's (R_delta [N,3,3], v [N,3]); overridable (tests use the exact transform)."""
        out = self.model(batch.to(self.device), aux=False)
        return out["rot"].double().cpu(), out["trans"].double().cpu()

    def refine(self, image: np.ndarray, K: np.ndarray, initial, n_iterations: int = 2, boxes=None) -> RefineResult:
        """``initial`` = [(obj_id, R [3,3], t [3]), ...] -> refined poses (same order). ``boxes``: one
        detection box (pixel-edge x1, y1, x2, y2) per entry, needed when ``observed_box`` is "detection"
        and ignored otherwise."""
        obj_ids = [int(o) for o, _, _ in initial]
        if self.observed_box == "detection":
            if boxes is None or len(boxes) != len(obj_ids):
                raise ValueError("this DeepIM network reads the detection box: refine() needs one box per initial pose")
            boxes = [np.asarray(b, dtype=np.float64).reshape(4) for b in boxes]
        R = np.stack([np.asarray(r, dtype=np.float64) for _, r, _ in initial]) if initial else np.zeros((0, 3, 3))
        t = np.stack([np.asarray(v, dtype=np.float64).reshape(3) for _, _, v in initial]) if initial else np.zeros((0, 3))
        result = RefineResult(R.copy(), t.copy())
        if not obj_ids:
            return result
        for _ in range(int(n_iterations)):
            zoomed = self.inputs(image, K, obj_ids, R, t, boxes)
            batch = torch.from_numpy(np.stack([z.tensor for z in zoomed]))
            self.focal = np.stack([z.eq3_focal(self.translation_units) for z in zoomed])
            rot_delta, v = self.predict(batch, obj_ids, R, t)
            focal = torch.from_numpy(self.focal)
            R_new, t_new = apply_untangled(torch.from_numpy(R), torch.from_numpy(t), rot_delta, v,
                                           focal[:, 0], focal[:, 1])
            R, t = R_new.numpy(), t_new.numpy()
            t[:, 2] = np.maximum(t[:, 2], self.min_depth)  # keep the estimate in front of the camera
            result.history.append((R.copy(), t.copy()))
        result.R, result.t = R, t
        return result
