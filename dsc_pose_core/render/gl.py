"""Fast headless OpenGL renderer (moderngl on EGL): Mesa llvmpipe on a CPU, the GPU driver on a GPU.

Used wherever no gradient is needed: synthetic training data, DeepIM's rendered crops, overlays,
silhouette scores and visible masks.

Camera: pinhole K in the OpenCV/BOP convention of :mod:`dsc_pose_core.geometry.camera` (x right,
y down, z forward; the centre of pixel (i, j) is at the continuous coordinate (i, j)). A crop is
rendered by passing the crop's intrinsics K' = A K (``geometry.crop_intrinsics``) and the crop
size, never by resampling a full render.

Projection (derivation). A camera point (X, Y, Z), Z > 0, projects to u = (fx X + s Y) / Z + cx,
v = (fy Y) / Z + cy. The image covers u in [-0.5, W - 0.5] (pixel edges), and the rasterizer
samples window coordinate x_w = i + 0.5 for the pixel i, with x_w = (x_ndc + 1) W / 2. Mapping
u = -0.5 -> x_ndc = -1 and u = W - 0.5 -> +1 gives x_ndc = 2 (u + 0.5) / W - 1, so the pixel
centre x_w = i + 0.5 lands exactly on u = i. With w_clip = Z:

    x_clip = (2 fx / W) X + (2 s / W) Y + (2 (cx + 0.5) / W - 1) Z
    y_clip =                (2 fy / H) Y + (2 (cy + 0.5) / H - 1) Z
    z_clip = (f + n) / (f - n) Z - 2 f n / (f - n)       (near -> -1, far -> +1)
    w_clip = Z

The y row uses the same form as x, without OpenGL's usual flip: image row v lands on window row v,
and glReadPixels (which starts at the window's bottom row, y_w = 0) returns rows in image order,
row 0 = top of the image. The flip mirrors the triangles' winding; no face culling is used, so
nothing depends on it.

Depth is the camera-frame z in metres, written by the fragment shader from a perspective-correct
varying into a 32-bit float attachment (exact for planar triangles; no z-buffer linearisation);
the z-buffer itself only resolves occlusion.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..objects.mesh import ObjectMesh

EGL_HELP = (
    "headless OpenGL needs EGL and a Mesa (or GPU vendor) driver: on Debian/Ubuntu "
    "`apt-get install libegl1 libgl1-mesa-dri` (plus `libegl-mesa0`), and `pip install moderngl`"
)


class RendererUnavailableError(RuntimeError):
    """No headless OpenGL context could be created (missing EGL / Mesa / moderngl)."""


@dataclass(frozen=True)
class LightConfig:
    """Blinn-Phong shading of the vertex colours.

    ``direction``: the direction from the surface towards the light, in the camera frame (OpenCV
    axes), e.g. (0, 0, -1) for a light behind the camera shining along +z; ``None`` puts a point
    light at the camera centre (a head light).
    """

    ambient: float = 0.4
    diffuse: float = 0.6
    specular: float = 0.15
    shininess: float = 32.0
    direction: tuple[float, float, float] | None = None
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class RenderOutput:
    """One frame ([H,W,...]) or a stack of frames ([B,H,W,...]).

    ``instance``: 0 = background, otherwise index + 1 into the ``objects`` list that was rendered
    (so two copies of one object are told apart); ``obj_ids`` holds the obj_id of each entry and
    :meth:`object_id_map` turns the instance map into obj_ids.
    """

    rgb: np.ndarray | None  # uint8 [...,H,W,3]; None when rendered with rgb=False
    depth: np.ndarray  # float32 [...,H,W], camera z in metres, 0 = background
    instance: np.ndarray  # int32 [...,H,W]
    obj_ids: tuple[int, ...] = field(default=())

    @property
    def mask(self) -> np.ndarray:
        """Any object (bool [...,H,W])."""
        return self.instance > 0

    def visible_mask(self, index: int) -> np.ndarray:
        """Visible pixels of the index-th rendered object (after occlusion by the others)."""
        return self.instance == index + 1

    def visible_boxes(self) -> np.ndarray:
        """Visible boxes of each rendered object from the instance map of one frame, [N,4] int, in
        BOP's scene_gt_info convention (x_min, y_min, x_max - x_min, y_max - y_min) over the visible
        pixels (so a one-pixel object has w = h = 0); (-1, -1, -1, -1) when unseen."""
        if self.instance.ndim != 2:
            raise ValueError("visible_boxes works on one frame; index the batch first")
        count = len(self.obj_ids)
        boxes = np.full((count, 4), -1, dtype=np.int64)
        ys, xs = np.nonzero(self.instance)
        labels = self.instance[ys, xs] - 1
        for index in range(count):
            sel = labels == index
            if sel.any():
                x0, x1, y0, y1 = xs[sel].min(), xs[sel].max(), ys[sel].min(), ys[sel].max()
                boxes[index] = (x0, y0, x1 - x0, y1 - y0)
        return boxes

    def object_id_map(self) -> np.ndarray:
        """int32 [...,H,W]: the obj_id at each pixel, 0 = background."""
        lut = np.asarray((0,) + tuple(self.obj_ids), dtype=np.int32)
        return lut[self.instance]


def projection_from_intrinsics(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """The 4x4 OpenGL projection of an OpenCV pinhole K (see the module docstring); rows in image order."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")
    if not (0 < near < far):
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    proj = np.zeros((4, 4))
    proj[0] = [2 * fx / width, 2 * s / width, 2 * (cx + 0.5) / width - 1, 0]
    proj[1] = [0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0]
    proj[2] = [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)]
    proj[3] = [0, 0, 1, 0]
    return proj


_VERTEX_SHADER = """
#version 330
uniform mat4 u_proj;
uniform mat4 u_model_view;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
void main() {
    vec4 p = u_model_view * vec4(in_pos, 1.0);
    v_pos = p.xyz;
    v_normal = mat3(u_model_view) * in_normal;
    v_color = in_color;
    gl_Position = u_proj * p;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec4 u_phong;         // ambient, diffuse, specular, shininess
uniform vec3 u_light_dir;     // towards the light, camera frame
uniform vec3 u_light_color;
uniform int u_headlight;
uniform float u_instance;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec2 f_depth_instance;
void main() {
    vec3 view = normalize(-v_pos);
    vec3 n = normalize(v_normal);
    if (dot(n, view) < 0.0) n = -n;   // two-sided lighting
    vec3 l = (u_headlight == 1) ? view : normalize(u_light_dir);
    float diffuse = max(dot(n, l), 0.0);
    float specular = 0.0;
    if (diffuse > 0.0) specular = pow(max(dot(n, normalize(l + view)), 0.0), u_phong.w);
    vec3 c = v_color * (u_phong.x + u_phong.y * diffuse) * u_light_color
             + u_phong.z * specular * u_light_color;
    f_color = vec4(clamp(c, 0.0, 1.0), 1.0);
    f_depth_instance = vec2(v_pos.z, u_instance);
}
"""


def _preload_triton() -> None:
    """Import triton (pulled in by torch.compile / roma) before Mesa's llvmpipe is loaded.

    Measured with torch 2.12 + Mesa 22.3: importing triton after an EGL llvmpipe context exists
    segfaults the process (two LLVMs in one process); importing it first is fine."""
    import importlib.util

    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # a broken triton is torch's problem, not the renderer's
            pass


def _faces_for_culling(mesh: ObjectMesh) -> np.ndarray | None:
    """Faces with consistent outward winding when the mesh is closed (watertight), else None.

    A closed mesh with a few flipped faces (the LM-O can and eggbox have 7 and 26) is repaired with
    trimesh's fix_winding (a one-off ~2-3 s for 40k faces); culling its raw faces would open
    pinholes where the flipped faces are."""
    import trimesh

    tri = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    try:
        if not tri.is_watertight:
            return None
        if not tri.is_winding_consistent:
            trimesh.repair.fix_winding(tri)
            if not tri.is_winding_consistent:
                return None
        if tri.volume < 0:
            tri.invert()
        return np.asarray(tri.faces)
    except Exception:  # degenerate meshes: draw without culling
        return None


class _Target:
    """Framebuffer and host read-back buffers of one resolution."""

    def __init__(self, ctx, width: int, height: int):
        self.width, self.height = width, height
        self.color = ctx.renderbuffer((width, height), components=4, dtype="f1")
        self.depth_instance = ctx.renderbuffer((width, height), components=2, dtype="f4")
        self.zbuffer = ctx.depth_renderbuffer((width, height))
        self.fbo = ctx.framebuffer(color_attachments=[self.color, self.depth_instance],
                                   depth_attachment=self.zbuffer)

    def release(self):
        for obj in (self.fbo, self.color, self.depth_instance, self.zbuffer):
            obj.release()


class FastRenderer:
    """Headless OpenGL renderer of several objects per frame with mutual occlusion.

    ``width``/``height`` is the default output size; ``render`` accepts any other size (crops) and
    keeps one framebuffer per size. Meshes are uploaded once with :meth:`add_object`. The OpenGL
    context is made current around every call, so one renderer may be used from any thread (one
    call at a time; calls are serialised by a lock).
    """

    def __init__(self, width: int = 640, height: int = 480, near: float = 0.01, far: float = 10.0,
                 backend: str = "egl"):
        try:
            import moderngl
        except ImportError as exc:
            raise RendererUnavailableError(f"moderngl is not installed: {EGL_HELP}") from exc
        _preload_triton()
        try:
            self._ctx = moderngl.create_standalone_context(backend=backend, require=330)
        except Exception as exc:  # glcontext raises plain Exceptions with the EGL error
            raise RendererUnavailableError(f"cannot create a headless OpenGL context ({backend}): {exc}; "
                                           f"{EGL_HELP}") from exc
        self.width, self.height = int(width), int(height)
        self.near, self.far = float(near), float(far)
        self._lock = threading.RLock()
        self._objects: dict[int, tuple] = {}
        self._targets: dict[tuple[int, int], _Target] = {}
        with self._ctx:
            self._program = self._ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            self._ctx.enable(moderngl.DEPTH_TEST)
            # The projection keeps image rows in order (y down), which mirrors the winding: an
            # outward counter-clockwise face (right-handed object frame) is clockwise on screen.
            self._ctx.front_face = "cw"
        self._moderngl = moderngl

    # ------------------------------------------------------------------ set-up
    @property
    def gl_renderer(self) -> str:
        """The driver's name (e.g. 'llvmpipe ...' on a CPU)."""
        with self._lock, self._ctx:
            return self._ctx.info["GL_RENDERER"]

    @property
    def object_ids(self) -> list[int]:
        return sorted(self._objects)

    def add_object(self, obj_id: int, mesh: ObjectMesh, color: Sequence[float] = (0.7, 0.7, 0.7),
                   cull_back_faces: bool | None = None) -> None:
        """Upload a mesh (metres) once; ``color`` is used when the mesh has no vertex colours.

        ``cull_back_faces`` skips triangles facing away from the camera (1.3-1.7x faster on
        llvmpipe for LM-O meshes). It is exact only for closed meshes with consistent outward
        winding: ``None`` (default) turns it on when trimesh finds the mesh watertight (fixing an
        inconsistent winding first), and off otherwise; ``True`` trusts the mesh's own winding
        (counter-clockwise seen from outside); ``False`` draws all faces.
        """
        faces = np.asarray(mesh.faces)
        if cull_back_faces is None:
            fixed = _faces_for_culling(mesh)
            cull_back_faces = fixed is not None
            faces = faces if fixed is None else fixed
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
        if mesh.vertex_colors is not None:
            colors = np.asarray(mesh.vertex_colors, dtype=np.float32)[:, :3]
        else:
            colors = np.broadcast_to(np.asarray(color, dtype=np.float32), vertices.shape)
        interleaved = np.ascontiguousarray(np.concatenate([vertices, normals, colors], axis=1))
        faces = np.ascontiguousarray(faces, dtype=np.int32)
        if faces.size == 0 or faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError(f"object {obj_id}: faces index outside the {len(vertices)} vertices")
        with self._lock, self._ctx:
            if obj_id in self._objects:
                self._release_object(obj_id)
            vbo = self._ctx.buffer(interleaved.tobytes())
            ibo = self._ctx.buffer(faces.tobytes())
            vao = self._ctx.vertex_array(self._program, [(vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")],
                                         index_buffer=ibo, index_element_size=4)
            self._objects[int(obj_id)] = (vao, vbo, ibo, bool(cull_back_faces))

    def face_count(self, obj_id: int) -> int:
        """Triangles uploaded for ``obj_id`` (after any decimation by the caller)."""
        return self._objects[int(obj_id)][2].size // 12  # int32 index triples

    def remove_object(self, obj_id: int) -> None:
        with self._lock, self._ctx:
            self._release_object(int(obj_id))

    def _release_object(self, obj_id: int) -> None:
        for obj in self._objects.pop(obj_id):
            if hasattr(obj, "release"):
                obj.release()

    def _target(self, width: int, height: int) -> _Target:
        key = (width, height)
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) >= 8:  # keep a few sizes; drop the oldest
                oldest = next(iter(self._targets))
                self._targets.pop(oldest).release()
            target = self._targets[key] = _Target(self._ctx, width, height)
        return target

    def close(self) -> None:
        """Free all GL objects and the context (the renderer is unusable afterwards)."""
        with self._lock:
            if self._ctx is None:
                return
            with self._ctx:
                for obj_id in list(self._objects):
                    self._release_object(obj_id)
                for target in self._targets.values():
                    target.release()
                self._targets.clear()
                self._program.release()
            self._ctx.release()
            self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ rendering
    def render(self, K, objects: Iterable[tuple[int, np.ndarray, np.ndarray]], width: int | None = None,
               height: int | None = None, light: LightConfig | None = None, near: float | None = None,
               far: float | None = None, rgb: bool = True) -> RenderOutput:
        """Render ``objects`` = [(obj_id, R [3x3], t [3] metres), ...] (object -> camera) into one frame.

        Returns arrays [H,W,...]; ``instance`` numbers the objects in list order from 1. With
        ``rgb=False`` the colour read-back is skipped (masks and depth only).
        """
        objects = [(int(o), np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64).reshape(3))
                   for o, R, t in objects]
        width = self.width if width is None else int(width)
        height = self.height if height is None else int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        with self._lock, self._ctx:
            color, depth_instance = self._draw(np.asarray(K, dtype=np.float64), objects, width, height,
                                               light or LightConfig(), near or self.near, far or self.far, rgb)
        return RenderOutput(rgb=color, depth=depth_instance[..., 0].copy(),
                            instance=depth_instance[..., 1].astype(np.int32),
                            obj_ids=tuple(o for o, _, _ in objects))

    def render_batch(self, K, obj_id: int, R, t, width: int | None = None, height: int | None = None,
                     light: LightConfig | None = None, near: float | None = None, far: float | None = None,
                     rgb: bool = True) -> RenderOutput:
        """Several poses of one object: R [B,3,3], t [B,3], K [3,3] or [B,3,3] -> stacked [B,H,W,...]."""
        R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
        t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
        if len(R) != len(t):
            raise ValueError(f"R and t batch sizes differ: {len(R)} vs {len(t)}")
        K = np.asarray(K, dtype=np.float64)
        Ks = np.broadcast_to(K, (len(R), 3, 3)) if K.ndim == 2 else K
        if len(Ks) != len(R):
            raise ValueError(f"K batch size {len(Ks)} differs from the {len(R)} poses")
        width = self.width if width is None else int(width)
        height = self.height if height is None else int(height)
        colors = np.zeros((len(R), height, width, 3), np.uint8) if rgb else None
        depth = np.zeros((len(R), height, width), np.float32)
        instance = np.zeros((len(R), height, width), np.int32)
        with self._lock, self._ctx:
            for b in range(len(R)):
                color, depth_instance = self._draw(Ks[b], [(int(obj_id), R[b], t[b])], width, height,
                                                   light or LightConfig(), near or self.near, far or self.far, rgb)
                if rgb:
                    colors[b] = color
                depth[b] = depth_instance[..., 0]
                instance[b] = depth_instance[..., 1]
        return RenderOutput(rgb=colors, depth=depth, instance=instance, obj_ids=(int(obj_id),))

    def _draw(self, K, objects, width, height, light: LightConfig, near, far, rgb):
        target = self._target(width, height)
        proj = projection_from_intrinsics(K, width, height, near, far)
        program = self._program
        target.fbo.use()
        target.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        program["u_proj"].write(proj.T.astype("f4").tobytes())  # GLSL matrices are column-major
        self._set_light(light)
        for index, (obj_id, R, t) in enumerate(objects):
            try:
                vao, _, _, cull = self._objects[obj_id]
            except KeyError:
                raise KeyError(f"object {obj_id} was not added to the renderer; added: {self.object_ids}") from None
            model_view = np.eye(4)
            model_view[:3, :3] = R
            model_view[:3, 3] = t
            program["u_model_view"].write(model_view.T.astype("f4").tobytes())
            program["u_instance"].value = float(index + 1)
            if cull:
                self._ctx.enable(self._moderngl.CULL_FACE)
            else:
                self._ctx.disable(self._moderngl.CULL_FACE)
            vao.render(self._moderngl.TRIANGLES)
        depth_instance = np.frombuffer(
            target.fbo.read(components=2, attachment=1, dtype="f4"), dtype=np.float32).reshape(height, width, 2)
        color = None
        if rgb:
            rgba = np.frombuffer(target.fbo.read(components=4, attachment=0, dtype="f1"),
                                 dtype=np.uint8).reshape(height, width, 4)
            color = rgba[..., :3]
        return color, depth_instance

    def _set_light(self, light: LightConfig):
        program = self._program
        program["u_phong"].value = (light.ambient, light.diffuse, light.specular, light.shininess)
        program["u_light_color"].value = tuple(float(c) for c in light.color)
        if light.direction is None:
            program["u_headlight"].value = 1
        else:
            direction = np.asarray(light.direction, dtype=np.float64)
            norm = np.linalg.norm(direction)
            if not norm > 0:
                raise ValueError("light direction must be a non-zero vector")
            program["u_headlight"].value = 0
            program["u_light_dir"].value = tuple(float(c) for c in direction / norm)
