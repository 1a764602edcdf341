"""Exact ray casting of a room (slab tests against every box) with textures and Lambertian light."""

from __future__ import annotations

import numpy as np

from fit3d_jax.scenes.synthetic.furniture import LABELS, Layout
from fit3d_jax.scenes.synthetic.textures import TEXTURE_SIZE, Palette
from fit3d_jax.scenes.types import View

# Face codes: 2 * axis + (1 if the face's normal, pointing at the viewer, is +axis else 0).
# Texture axes per face code: u runs to the viewer's right on vertical faces, v runs up (+z).
_U_AXIS = np.array([1, 1, 0, 0, 0, 0])
_U_SIGN = np.array([-1.0, 1.0, 1.0, -1.0, 1.0, 1.0], np.float32)
_V_AXIS = np.array([2, 2, 2, 2, 1, 1])


class Renderer:
    """Primitive 0 is the room (seen from inside), 1.. the furniture boxes."""

    AMBIENT = 0.45
    LIGHT_FALLOFF = 2.5  # metres at which a light's irradiance has halved (1 / (1 + (d / f)^2))

    def __init__(self, layout: Layout, palette: Palette):
        boxes = layout.boxes
        self.size = layout.size
        self.centre = np.array([layout.size / 2] + [b.centre for b in boxes], np.float32)
        self.half = np.array([layout.size / 2] + [b.half for b in boxes], np.float32)
        yaw = np.array([0.0] + [b.yaw for b in boxes])
        self.cos, self.sin = np.cos(yaw).astype(np.float32), np.sin(yaw).astype(np.float32)
        self.face_material = np.array([layout.room_materials] + [(b.material,) * 6 for b in boxes], np.int32)
        room_labels = [LABELS["wall"]] * 4 + [LABELS["ceiling"], LABELS["floor"]]
        self.face_label = np.array([room_labels] + [[LABELS[b.label]] * 6 for b in boxes], np.uint8)
        self.atlases = palette.mip_atlases()
        self.tile = np.array(palette.tile, np.float32)
        self.offset = np.array(palette.offset, np.float32)
        self.emissive = np.array(palette.emissive)
        self.lights = layout.lights.astype(np.float32)
        self.light_power = layout.light_power.astype(np.float32)
        self.corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)
        self.edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]

    def clearance(self, points: np.ndarray) -> np.ndarray:
        """Distance from each point to the nearest surface (room walls included)."""
        rel = points[:, None, :] - self.centre[None, 1:]
        local = np.stack([self.cos[1:] * rel[..., 0] + self.sin[1:] * rel[..., 1],
                          -self.sin[1:] * rel[..., 0] + self.cos[1:] * rel[..., 1], rel[..., 2]], -1)
        outside = np.maximum(np.abs(local) - self.half[None, 1:], 0)
        to_boxes = np.linalg.norm(outside, axis=-1).min(axis=1)
        to_walls = np.minimum(points, self.size - points).min(axis=1)
        return np.minimum(to_boxes, to_walls)

    def _pixel_rect(self, k: int, rotation: np.ndarray, origin: np.ndarray, fx, fy, cx, cy, width, height):
        """Rows and columns whose centre rays may hit box k: its corners projected (the part in
        front of the near plane, through the edges crossing it)."""
        c, s = self.cos[k], self.sin[k]
        local = self.corners * self.half[k]
        world = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], -1) + self.centre[k]
        cam = (world - origin) @ rotation.T
        near = 1e-3
        points = [cam[cam[:, 2] >= near]]
        for a, b in self.edges:
            za, zb = cam[a, 2], cam[b, 2]
            if (za - near) * (zb - near) < 0:
                f = (near - za) / (zb - za)
                points.append((cam[a] + f * (cam[b] - cam[a]))[None])
        front = np.concatenate(points)
        if not len(front):
            return None
        u = fx * front[:, 0] / front[:, 2] + cx
        v = fy * front[:, 1] / front[:, 2] + cy
        j0, j1 = max(int(np.floor(u.min() - 0.5)), 0), min(int(np.ceil(u.max() - 0.5)) + 1, width)
        i0, i1 = max(int(np.floor(v.min() - 0.5)), 0), min(int(np.ceil(v.max() - 0.5)) + 1, height)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def render(self, view: View, rays: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB, (H, W) float32 depth (camera z, metres), (H, W) uint8 labels.
        ``rays``: (H, W, 2) camera-space x/z and y/z of every pixel's ray, for cameras that are not
        pinhole (fisheye); by default the view's pinhole rays through the pixel centres."""
        rotation = view.world_to_camera[:3, :3]
        origin = view.camera_center
        if rays is None:
            xs = ((np.arange(view.width) + 0.5 - view.cx) / view.fx)[None, :]
            ys = ((np.arange(view.height) + 0.5 - view.cy) / view.fy)[:, None]
            whole = None
        else:
            xs, ys = rays[..., 0], rays[..., 1]
            whole = (slice(None), slice(None))  # a box's pixels are no rectangle: test them all
        # World ray directions scaled to camera z = 1, so that the ray parameter is the depth.
        d = [(rotation[0, a] * xs + rotation[1, a] * ys + rotation[2, a]).astype(np.float32) for a in range(3)]
        o = origin.astype(np.float32)

        with np.errstate(divide="ignore", invalid="ignore"):
            # The room from inside: the nearest wall the ray leaves through.
            exits = np.stack([np.where(d[a] > 0, (self.size[a] - o[a]) / d[a], np.where(d[a] < 0, -o[a] / d[a], np.inf))
                              for a in range(3)])
            axis = exits.argmin(axis=0)
            depth = np.take_along_axis(exits, axis[None], 0)[0].astype(np.float32)
            code = (2 * axis + (np.take_along_axis(np.stack(d), axis[None], 0)[0] < 0)).astype(np.int8)
            prim = np.zeros(depth.shape, np.int32)
            for k in range(1, len(self.centre)):
                rect = whole or self._pixel_rect(k, rotation, origin, view.fx, view.fy, view.cx, view.cy, view.width, view.height)
                if rect is not None:
                    self._slab_test(k, rect, d, o, depth, code, prim)
        return self._shade(view, d, o, depth, code, prim), depth, self.face_label[prim, code]

    def _slab_test(self, k, rect, d, o, depth, code, prim) -> None:
        """Updates depth/code/prim in ``rect`` where box k is the nearest hit so far."""
        c, s, half = self.cos[k], self.sin[k], self.half[k]
        dx, dy, dz = (a[rect] for a in d)
        rel = o - self.centre[k]
        local_o = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
        local_d = (c * dx + s * dy, -s * dx + c * dy, dz)
        near, far = [], []
        for a in range(3):
            inv = 1.0 / local_d[a]
            t0, t1 = (-half[a] - local_o[a]) * inv, (half[a] - local_o[a]) * inv
            near.append(np.minimum(t0, t1))
            far.append(np.maximum(t0, t1))
        t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
        t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
        current = depth[rect]
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < current)
        if not hit.any():
            return
        axis = np.where(near[0] >= np.maximum(near[1], near[2]), 0, np.where(near[1] >= near[2], 1, 2))
        entering_d = np.choose(axis, local_d)
        current[hit] = t_near[hit]
        code[rect][hit] = (2 * axis + (entering_d < 0))[hit]
        prim[rect][hit] = k

    def _shade(self, view: View, d, o, depth, code, prim) -> np.ndarray:
        shape = depth.shape
        t, p, f = depth.ravel(), prim.ravel(), code.ravel().astype(np.int64)
        dirs = np.stack([a.ravel() for a in d], -1)
        points = o + t[:, None] * dirs
        rel = points - self.centre[p]
        c, s = self.cos[p], self.sin[p]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)
        rows = np.arange(len(t))
        axis, sign = f // 2, np.where(f % 2 == 1, 1.0, -1.0).astype(np.float32)
        normal = np.zeros_like(points)
        normal[:, 0] = np.where(axis == 0, c, np.where(axis == 1, -s, 0)) * sign
        normal[:, 1] = np.where(axis == 0, s, np.where(axis == 1, c, 0)) * sign
        normal[:, 2] = np.where(axis == 2, sign, 0)

        material = self.face_material[p, f]
        u_axis, v_axis = _U_AXIS[f], _V_AXIS[f]
        u_metres = _U_SIGN[f] * local[rows, u_axis]
        v_metres = local[rows, v_axis]
        u_half, v_half = self.half[p, u_axis], self.half[p, v_axis]
        tile = self.tile[material]
        stretched = tile <= 0
        safe_tile = np.where(stretched, 1.0, tile)
        u = np.where(stretched, np.clip((u_metres + u_half) / (2 * u_half), 0, 1), _mirror(u_metres / safe_tile + self.offset[material, 0]))
        v = np.where(stretched, np.clip((v_metres + v_half) / (2 * v_half), 0, 1), _mirror(v_metres / safe_tile + self.offset[material, 1]))
        # Mip level: texels per pixel footprint on the surface (grazing angles widen it).
        ray_length = np.sqrt(_dot(dirs, dirs))
        cosine = np.abs(_dot(normal, dirs)) / ray_length
        footprint = t * ray_length / view.fx / np.maximum(cosine, 0.2)
        texel = np.where(stretched, 2 * u_half, tile) / TEXTURE_SIZE
        level = np.clip(np.rint(np.log2(np.maximum(footprint / texel, 1.0))), 0, len(self.atlases) - 1).astype(np.int64)
        albedo = _sample(self.atlases, material, u, 1 - v, level)  # image rows run down, v runs up

        irradiance = np.full(len(t), self.AMBIENT, np.float32)
        for light, power in zip(self.lights, self.light_power):
            to_light = light - points
            distance = np.sqrt(_dot(to_light, to_light))
            lambert = np.maximum(_dot(normal, to_light) / np.maximum(distance, 1e-6), 0)
            irradiance += power * lambert / (1 + (distance / self.LIGHT_FALLOFF) ** 2)
        colour = np.where(self.emissive[material][:, None], albedo, albedo * irradiance[:, None])
        return np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8).reshape(*shape, 3)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays."""
    return np.einsum("ij,ij->i", a, b)


def _mirror(x: np.ndarray) -> np.ndarray:
    """Mirrored repeat into [0, 1]: tiles meet without seams."""
    x = np.mod(x, 2.0)
    return np.where(x > 1, 2 - x, x)


def _sample(atlases: list[np.ndarray], material: np.ndarray, u: np.ndarray, v: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (u, v) in [0, 1] (v down) in each pixel's material at its mip level."""
    out = np.empty((len(u), 3), np.float32)
    for index, atlas in enumerate(atlases):
        sel = np.flatnonzero(level == index)
        if not len(sel):
            continue
        size = atlas.shape[1]
        x, y = u[sel] * size - 0.5, v[sel] * size - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        wx, wy = (x - x0)[:, None], (y - y0)[:, None]
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        xa, xb = np.clip(x0, 0, size - 1), np.clip(x0 + 1, 0, size - 1)
        ya, yb = np.clip(y0, 0, size - 1), np.clip(y0 + 1, 0, size - 1)
        flat = atlas.reshape(-1, 3)  # texel (m, y, x) at row (m * size + y) * size + x
        row_a, row_b = (material[sel] * size + ya) * size, (material[sel] * size + yb) * size
        top = flat[row_a + xa] * (1 - wx) + flat[row_a + xb] * wx
        bottom = flat[row_b + xa] * (1 - wx) + flat[row_b + xb] * wx
        out[sel] = (top * (1 - wy) + bottom * wy) / 255.0
    return out


def box_mesh(renderer: Renderer) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The room as a triangle mesh: vertices (V, 3) float64, faces (F, 3) int32, and each vertex's
    primitive (0 = the room) and face code. Every box face has its own 4 vertices (so a vertex has one
    face's label, as the room's walls, floor and ceiling need)."""
    vertices, faces, prims, codes = [], [], [], []
    for k in range(len(renderer.centre)):
        c, s = float(renderer.cos[k]), float(renderer.sin[k])
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        half = renderer.half[k].astype(np.float64)
        for code in range(6):
            # the room's codes (seen from inside): 2a the +a face, 2a + 1 the -a face (a box's faces share one label)
            axis, side = code // 2, 1.0 if code % 2 == 0 else -1.0
            u, v = [a for a in range(3) if a != axis]
            corners = np.zeros((4, 3))
            corners[:, axis] = side * half[axis]
            corners[:, u] = np.array([-1, 1, 1, -1]) * half[u]
            corners[:, v] = np.array([-1, -1, 1, 1]) * half[v]
            base = len(vertices) * 4
            vertices.append(corners @ rotation.T + renderer.centre[k].astype(np.float64))
            faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
            prims.append(np.full(4, k))
            codes.append(np.full(4, code))
    return np.concatenate(vertices), np.array(faces, np.int32), np.concatenate(prims), np.concatenate(codes)
