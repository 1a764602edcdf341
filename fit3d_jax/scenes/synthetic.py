"""Built-in synthetic rooms, written in the nerfstudio-style scene layout (``scenes.nerfstudio``).

A room is a closed box (walls, floor, ceiling) furnished with objects built from boxes: tables
with chairs, shelves with things on them, beds, cabinets, stacks of boxes, lamps, pictures on the
walls. Surfaces are textured with patches of real photographs shipped with scikit-image and lit
by a Lambertian model (ceiling lights, a floor lamp, ambient). Views are rendered by exact ray
casting (slab tests against every box, nearest hit), so the depth and label images are ground
truth. Cameras follow a handheld scan: a smooth loop at 1.3-1.7 m, looking across the room, with
jitter; test views are interleaved along the loop.

World frame: metres, z up, the room spans [0, size] on each axis. One seed gives one room; the
camera path, the views and the sparse points follow from (seed, parameters).

Files written besides the layout's: ``depth/*.png`` (uint16, millimetres of camera-space z),
``labels/*.png`` (uint8 ids into ``classes.json``) and ``generator.json`` (the parameters).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from fit3d_jax.scenes import nerfstudio
from fit3d_jax.scenes.types import SceneData, View

CLASSES = ("void", "wall", "floor", "ceiling", "table", "chair", "shelf", "bed", "cabinet", "box", "lamp", "picture")
LABELS = {name: i for i, name in enumerate(CLASSES)}
GENERATOR_VERSION = 1  # bump when the same parameters would give a different room
GENERATOR_FILE = "generator.json"
TEXTURE_SIZE = 256  # texels per side of every texture (mip level 0)
CAMERA_CLEARANCE = 0.2  # metres between a camera centre and any surface

# Face codes: 2 * axis + (1 if the face's normal, pointing at the viewer, is +axis else 0).
# Texture axes per face code: u runs to the viewer's right on vertical faces, v runs up (+z).
_U_AXIS = np.array([1, 1, 0, 0, 0, 0])
_U_SIGN = np.array([-1.0, 1.0, 1.0, -1.0, 1.0, 1.0], np.float32)
_V_AXIS = np.array([2, 2, 2, 2, 1, 1])


class RoomParameterError(ValueError):
    """A generator parameter is out of range; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# ---------------------------------------------------------------------------------------------
# Textures: patches of scikit-image's photographs


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle")
GREY_TEXTURES = ("brick", "grass", "gravel", "moon", "cell", "coins", "camera")


@functools.cache
def _photograph(name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; grey images are contrast-stretched (they are tinted later)."""
    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        lo, hi = np.percentile(image, [2, 98])
        image = np.repeat(np.clip((image - lo) / max(hi - lo, 1e-3), 0, 1)[..., None], 3, axis=-1)
    return image


def _crop(rng: np.random.Generator, image: np.ndarray, fraction: tuple[float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    side = max(16, int(min(h, w) * rng.uniform(*fraction)))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return cv2.resize(image[y:y + side, x:x + side], (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA)


def _colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)), np.float32)


class _Palette:
    """The room's materials: a texture (mip pyramid) each, how it maps onto faces, and whether it glows."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.textures: list[np.ndarray] = []
        self.tile: list[float] = []  # metres per texture repeat; 0 = stretched once over the face
        self.offset: list[tuple[float, float]] = []
        self.emissive: list[bool] = []

    def _add(self, texture: np.ndarray, tile: float, emissive: bool = False) -> int:
        self.textures.append(np.clip(texture * 255 + 0.5, 0, 255).astype(np.uint8))
        self.tile.append(tile)
        self.offset.append(tuple(self.rng.uniform(0, 1, 2)))
        self.emissive.append(emissive)
        return len(self.textures) - 1

    def tinted(self, sources, tint, contrast: tuple[float, float], tile: tuple[float, float]) -> int:
        """A grey texture coloured by ``tint``: plaster, carpet, stone, fabric, cardboard."""
        grey = _crop(self.rng, _photograph(self.rng.choice(sources)), (0.3, 0.7))
        c = self.rng.uniform(*contrast)
        return self._add(tint * (1 - c + c * grey), self.rng.uniform(*tile))

    def photo_patch(self, tint, mix: tuple[float, float], tile: tuple[float, float]) -> int:
        """A patch of a colour photograph blended towards ``tint``: varnished, printed, painted things."""
        patch = _crop(self.rng, _photograph(self.rng.choice(PHOTOS)), (0.15, 0.45))
        m = self.rng.uniform(*mix)
        return self._add((1 - m) * patch + m * tint, self.rng.uniform(*tile))

    def picture(self) -> tuple[int, float]:
        """A whole photograph stretched over a canvas; returns (material, height / width)."""
        image = _photograph(self.rng.choice(PHOTOS))
        texture = cv2.resize(image, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA)
        return self._add(texture, 0.0), image.shape[0] / image.shape[1]

    def glow(self) -> int:
        warm = np.array([1.0, 0.95, 0.82], np.float32) * self.rng.uniform(0.9, 1.0)
        return self._add(np.broadcast_to(warm, (TEXTURE_SIZE, TEXTURE_SIZE, 3)), 1.0, emissive=True)

    def wood(self) -> int:
        return self.photo_patch(_colour(self.rng, (0.3, 0.7), (0.25, 0.7)), (0.3, 0.6), (0.4, 0.9))

    def fabric(self) -> int:
        return self.tinted(GREY_TEXTURES, _colour(self.rng, (0.2, 0.8), (0.35, 0.9)), (0.3, 0.7), (0.25, 0.6))

    def metal(self) -> int:
        return self.tinted(("coins", "camera", "moon"), _colour(self.rng, (0.0, 0.1), (0.3, 0.8)), (0.2, 0.5), (0.3, 0.6))

    def cardboard(self) -> int:
        return self.tinted(("gravel", "cell", "grass"), _colour(self.rng, (0.35, 0.55), (0.55, 0.8)), (0.2, 0.45), (0.3, 0.7))

    def mip_atlases(self) -> list[np.ndarray]:
        """Per mip level, all textures stacked: (materials, size, size, 3) uint8, from TEXTURE_SIZE to 4."""
        levels = [np.stack(self.textures)]
        while levels[-1].shape[1] > 4:
            half = levels[-1].shape[1] // 2
            levels.append(np.stack([cv2.resize(t, (half, half), interpolation=cv2.INTER_AREA) for t in levels[-1]]))
        return levels


# ---------------------------------------------------------------------------------------------
# Layout: objects made of boxes


@dataclasses.dataclass(frozen=True)
class _Box:
    centre: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents along the box's own axes
    material: int  # on every face
    label: str
    yaw: float = 0.0  # rotation about +z

    def moved(self, offset, yaw: float) -> _Box:
        """This box after rotating its parent by ``yaw`` about the origin and translating by ``offset``."""
        c, s = math.cos(yaw), math.sin(yaw)
        x, y, z = self.centre
        centre = np.array([c * x - s * y, s * x + c * y, z]) + np.asarray(offset, np.float64)
        return dataclasses.replace(self, centre=centre, yaw=self.yaw + yaw)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        extent = np.array([c * self.half[0] + s * self.half[1], s * self.half[0] + c * self.half[1], self.half[2]])
        return self.centre - extent, self.centre + extent


def _box(centre, size, material, label: str, yaw: float = 0.0) -> _Box:
    return _Box(np.asarray(centre, np.float64), np.asarray(size, np.float64) / 2, material, label, yaw)


def _bounds(boxes: list[_Box]) -> tuple[np.ndarray, np.ndarray]:
    lows, highs = zip(*(b.bounds() for b in boxes))
    return np.min(lows, axis=0), np.max(highs, axis=0)


def _place(boxes: list[_Box], offset, yaw: float) -> list[_Box]:
    return [b.moved(offset, yaw) for b in boxes]


# Builders: objects in their own frame, standing on z = 0, centred on x, their back towards +y.


def _table(rng, palette: _Palette, width: float, depth: float) -> list[_Box]:
    height, leg = rng.uniform(0.72, 0.78), rng.uniform(0.04, 0.07)
    top, legs = palette.wood(), palette.wood() if rng.uniform() < 0.5 else palette.metal()
    boxes = [_box((0, 0, height - 0.02), (width, depth, 0.04), top, "table")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes.append(_box((sx * (width / 2 - leg), sy * (depth / 2 - leg), (height - 0.04) / 2), (leg, leg, height - 0.04), legs, "table"))
    return boxes


def _chair(rng, palette: _Palette) -> list[_Box]:
    side, seat_h, back_h, leg = rng.uniform(0.4, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.35, 0.5), 0.04
    seat = palette.fabric() if rng.uniform() < 0.5 else palette.wood()
    frame = palette.wood()
    boxes = [_box((0, 0, seat_h), (side, side, 0.05), seat, "chair"),
             _box((0, side / 2 - 0.02, seat_h + 0.025 + back_h / 2), (side, 0.04, back_h), frame, "chair")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes.append(_box((sx * (side / 2 - leg / 2), sy * (side / 2 - leg / 2), (seat_h - 0.025) / 2), (leg, leg, seat_h - 0.025), frame, "chair"))
    return boxes


def _table_set(rng, palette: _Palette, against_wall: bool) -> list[_Box]:
    width, depth = rng.uniform(0.9, 1.6), rng.uniform(0.6, 0.9)
    boxes = _table(rng, palette, width, depth)
    # Chairs pulled out around the table, facing it; none behind a table at a wall.
    sides = [(0.0, -depth / 2, math.pi), (-width / 2, 0.0, math.pi / 2), (width / 2, 0.0, -math.pi / 2)]
    if not against_wall:
        sides.append((0.0, depth / 2, 0.0))
    count = rng.integers(1, len(sides) + 1)
    for k in rng.permutation(len(sides))[:count]:
        x, y, yaw = sides[k]
        out = np.array([x, y]) / max(np.hypot(x, y), 1e-9)
        pos = np.array([x, y]) + out * rng.uniform(0.2, 0.4) + rng.uniform(-0.1, 0.1, 2) * (out == 0)
        boxes += _place(_chair(rng, palette), (*pos, 0.0), yaw + rng.uniform(-0.25, 0.25))
    return boxes


def _shelf(rng, palette: _Palette) -> list[_Box]:
    width, depth, height, board = rng.uniform(0.7, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.5, 2.0), 0.025
    wood = palette.wood()
    boxes = [_box((sx * (width - board) / 2, 0, height / 2), (board, depth, height), wood, "shelf") for sx in (-1, 1)]
    boxes.append(_box((0, depth / 2 - 0.01, height / 2), (width - 2 * board, 0.02, height), wood, "shelf"))
    levels = np.linspace(0.05, height - board / 2, rng.integers(4, 6))
    inner = width - 2 * board
    for z in levels:
        boxes.append(_box((0, 0, z), (inner, depth - 0.02, board), wood, "shelf"))
    for z0, z1 in zip(levels[:-1], levels[1:]):  # things on the shelves
        x = -inner / 2 + 0.02
        while rng.uniform() < 0.75:
            w, d, h = rng.uniform(0.08, 0.3), rng.uniform(0.15, depth - 0.06), rng.uniform(0.1, min(0.35, z1 - z0 - 0.05))
            if x + w > inner / 2 - 0.02:
                break
            material = palette.cardboard() if rng.uniform() < 0.5 else palette.photo_patch(_colour(rng, (0.3, 0.9), (0.3, 0.9)), (0.0, 0.4), (0.2, 0.4))
            boxes.append(_box((x + w / 2, -0.01, z0 + board / 2 + h / 2), (w, d, h), material, "box"))
            x += w + rng.uniform(0.01, 0.15)
    return boxes


def _bed(rng, palette: _Palette) -> list[_Box]:
    width, length, base = rng.uniform(1.0, 1.8), rng.uniform(1.9, 2.1), rng.uniform(0.25, 0.35)
    frame, sheet = palette.wood(), palette.fabric()
    head = rng.uniform(0.8, 1.1)
    boxes = [_box((0, 0, base / 2), (width, length, base), frame, "bed"),
             _box((0, -0.02, base + 0.1), (width - 0.06, length - 0.1, 0.2), sheet, "bed"),
             _box((0, length / 2 + 0.03, head / 2), (width + 0.04, 0.06, head), frame, "bed")]
    pillow = palette.fabric()
    count = 1 if width < 1.3 else 2
    for k in range(count):
        x = (k - (count - 1) / 2) * width / count
        boxes.append(_box((x, length / 2 - 0.3, base + 0.26), (width / count - 0.1, 0.4, 0.12), pillow, "bed"))
    return boxes


def _cabinet(rng, palette: _Palette) -> list[_Box]:
    width, depth = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6)
    height = rng.uniform(0.7, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.6, 1.95)
    body, door, handle = palette.wood(), palette.wood(), palette.metal()
    boxes = [_box((0, 0, height / 2), (width, depth, height), body, "cabinet")]
    doors = 1 if width < 0.7 else 2
    door_w = (width - 0.04) / doors
    for k in range(doors):
        x = -width / 2 + 0.02 + door_w * (k + 0.5)
        boxes.append(_box((x, -depth / 2 - 0.01, height / 2), (door_w - 0.01, 0.02, height - 0.06), door, "cabinet"))
        hx = x + (door_w / 2 - 0.06) * (-1 if k == 1 else 1)  # handles towards the middle
        boxes.append(_box((hx, -depth / 2 - 0.03, height * 0.55), (0.025, 0.02, 0.15), handle, "cabinet"))
    return boxes


def _box_stack(rng, palette: _Palette) -> list[_Box]:
    boxes, z = [], 0.0
    for _ in range(rng.integers(1, 4)):
        w, d, h = rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.45)
        if z + h > 1.1:
            break
        boxes.append(_box((0, 0, z + h / 2), (w, d, h), palette.cardboard(), "box", rng.uniform(-0.3, 0.3)))
        z += h
    return boxes


def _floor_lamp(rng, palette: _Palette) -> list[_Box]:
    """A pole and a glowing shade (the last box, where its light is)."""
    height, metal = rng.uniform(1.4, 1.7), palette.metal()
    shade = rng.uniform(0.3, 0.45)
    boxes = [_box((0, 0, 0.015), (0.3, 0.3, 0.03), metal, "lamp"),
             _box((0, 0, height / 2), (0.03, 0.03, height), metal, "lamp"),
             _box((0, 0, height + 0.12), (shade, shade, 0.28), palette.glow(), "lamp")]
    return boxes


def _picture(rng, palette: _Palette, centre_z: float) -> list[_Box]:
    canvas, aspect = palette.picture()
    width = rng.uniform(0.35, 0.9)
    height = width * aspect
    frame = palette.wood() if rng.uniform() < 0.7 else palette.metal()
    border = rng.uniform(0.02, 0.06)
    return [_box((0, 0, centre_z), (width + 2 * border, 0.03, height + 2 * border), frame, "picture"),
            _box((0, -0.016, centre_z), (width, 0.004, height), canvas, "picture")]


@dataclasses.dataclass
class _Layout:
    size: np.ndarray  # (3,) room extent
    boxes: list[_Box]  # furniture
    room_materials: tuple[int, ...]  # per face code of the room's inside
    lights: np.ndarray  # (K, 3) point-light positions
    light_power: np.ndarray  # (K,)


class _Furnisher:
    """Places objects without overlaps: against a wall (back to it) or free-standing."""

    def __init__(self, rng: np.random.Generator, size: np.ndarray):
        self.rng, self.size = rng, size
        self.boxes: list[_Box] = []
        self.occupied: list[tuple[np.ndarray, np.ndarray]] = []

    def _fits(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        if (lo < -1e-9).any() or (hi > self.size + 1e-9).any():
            return False
        margin = 0.03
        return not any((lo < h + margin).all() and (hi > l - margin).all() for l, h in self.occupied)

    def add(self, boxes: list[_Box], *, wall: bool, tries: int = 40) -> bool:
        """Places the object (built around the origin, back towards +y) at a random free spot:
        against a wall, or free-standing with walking space (0.6 m) along the walls. False if
        no try fits (the room then has one object fewer)."""
        for _ in range(tries):
            if wall:
                side = self.rng.integers(4)  # the wall behind it: y = max, x = max, y = 0, x = 0
                placed = _place(boxes, (0, 0, 0), (0.0, -math.pi / 2, math.pi, math.pi / 2)[side])
                lo, hi = _bounds(placed)
                across, along = (1, 0, 1, 0)[side], (0, 1, 0, 1)[side]
                slack = self.size[along] - (hi[along] - lo[along])
                if slack <= 0:
                    continue
                shift = np.zeros(3)
                gap = 0.005
                shift[across] = self.size[across] - gap - hi[across] if side < 2 else gap - lo[across]
                shift[along] = self.rng.uniform(0, slack) - lo[along]
            else:
                placed = _place(boxes, (0, 0, 0), self.rng.uniform(0, 2 * math.pi))
                lo, hi = _bounds(placed)
                slack = self.size[:2] - 1.2 - (hi - lo)[:2]
                if (slack <= 0).any():
                    continue
                shift = np.zeros(3)
                shift[:2] = 0.6 + self.rng.uniform(0, slack) - lo[:2]
            placed = _place(placed, shift, 0.0)
            lo, hi = _bounds(placed)
            if self._fits(lo, hi):
                self.boxes += placed
                self.occupied.append((lo, hi))
                return True
        return False


def _furnish(rng: np.random.Generator, palette: _Palette) -> _Layout:
    size = np.array([rng.uniform(4.0, 7.0), rng.uniform(3.5, 6.0), rng.uniform(2.5, 3.0)])
    paint = _colour(rng, (0.0, 0.25), (0.7, 0.95))
    wall = palette.tinted(("gravel", "moon", "cell"), paint, (0.1, 0.3), (1.0, 2.0))
    accent = palette.tinted(("brick",), _colour(rng, (0.1, 0.5), (0.5, 0.9)), (0.5, 0.8), (1.0, 1.6))
    walls = [accent if rng.uniform() < 0.25 else wall for _ in range(4)]
    floor_tint = _colour(rng, (0.2, 0.6), (0.3, 0.7))
    floor = (palette.tinted(("grass", "gravel", "brick", "moon"), floor_tint, (0.3, 0.7), (0.5, 1.5))
             if rng.uniform() < 0.6 else palette.photo_patch(floor_tint, (0.3, 0.6), (0.6, 1.2)))
    ceiling = palette.tinted(("gravel", "moon"), _colour(rng, (0.0, 0.1), (0.8, 0.95)), (0.05, 0.2), (1.0, 2.0))
    # Face codes: 0 x=size (normal -x), 1 x=0, 2 y=size, 3 y=0, 4 ceiling, 5 floor.
    room_materials = (walls[0], walls[1], walls[2], walls[3], ceiling, floor)

    furnisher = _Furnisher(rng, size)
    lights, power = [], []
    if rng.uniform() < 0.6:
        furnisher.add(_bed(rng, palette), wall=True)
    for _ in range(rng.integers(1, 3)):
        furnisher.add(_shelf(rng, palette), wall=True)
    for _ in range(rng.integers(1, 3)):
        furnisher.add(_cabinet(rng, palette), wall=True)
    at_wall = rng.uniform() < 0.5
    furnisher.add(_table_set(rng, palette, at_wall), wall=at_wall)
    for _ in range(rng.integers(1, 4)):
        furnisher.add(_box_stack(rng, palette), wall=True)
    if rng.uniform() < 0.7 and furnisher.add(_floor_lamp(rng, palette), wall=True):
        lights.append(furnisher.boxes[-1].centre.copy())
        power.append(0.25)
    for _ in range(rng.integers(2, 5)):
        furnisher.add(_picture(rng, palette, min(rng.uniform(1.3, 1.8), size[2] - 0.6)), wall=True)
    # A couple of ceiling lights along the room's long side.
    long_axis = int(size[1] > size[0])
    glow = palette.glow()
    for fraction in (0.3, 0.7):
        centre = size / 2
        centre[long_axis] = size[long_axis] * fraction
        centre[2] = size[2] - 0.02
        furnisher.boxes.append(_box(centre, (0.5, 0.5, 0.04), glow, "lamp"))
        lights.append(centre - [0, 0, 0.15])
        power.append(0.55)
    return _Layout(size, furnisher.boxes, room_materials, np.array(lights), np.array(power))


# ---------------------------------------------------------------------------------------------
# Ray casting


class _Renderer:
    """Primitive 0 is the room (seen from inside), 1.. the furniture boxes."""

    AMBIENT = 0.45
    LIGHT_FALLOFF = 2.5  # metres at which a light's irradiance has halved (1 / (1 + (d / f)^2))

    def __init__(self, layout: _Layout, palette: _Palette):
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

    def render(self, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB, (H, W) float32 depth (camera z, metres), (H, W) uint8 labels."""
        rotation = view.world_to_camera[:3, :3]
        origin = view.camera_center
        xs = ((np.arange(view.width) + 0.5 - view.cx) / view.fx)[None, :]
        ys = ((np.arange(view.height) + 0.5 - view.cy) / view.fy)[:, None]
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
                rect = self._pixel_rect(k, rotation, origin, view.fx, view.fy, view.cx, view.cy, view.width, view.height)
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


# ---------------------------------------------------------------------------------------------
# Camera path


def _periodic_noise(rng: np.random.Generator, s: np.ndarray, amplitude: float, terms: int = 3) -> np.ndarray:
    """A smooth random function of s in [0, 1), periodic, of about ``amplitude``."""
    out = np.zeros_like(s)
    for _ in range(terms):
        out += rng.normal(0, amplitude / math.sqrt(terms)) * np.sin(2 * np.pi * rng.integers(1, 5) * s + rng.uniform(0, 2 * np.pi))
    return out


def _look(position: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-to-camera (OpenCV axes) for a camera at ``position`` looking along (yaw, pitch), z up."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, forward])
    w2c[:3, 3] = -w2c[:3, :3] @ position
    return w2c


def _camera_path(rng: np.random.Generator, renderer: _Renderer, count: int, tries: int = 20) -> list[np.ndarray]:
    """World-to-camera matrices along a loop around the room, every centre clear of all surfaces."""
    size = renderer.size
    for _ in range(tries):
        s = (np.arange(count) + rng.uniform(-0.25, 0.25, count)) / count
        angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * 2 * np.pi * s
        semi_axes = np.maximum(size[:2] / 2 - rng.uniform(0.95, 1.3, 2), 0.25)
        x = size[0] / 2 + semi_axes[0] * np.cos(angle) + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count)
        y = size[1] / 2 + semi_axes[1] * np.sin(angle) + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count)
        z = np.clip(1.5 + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.01, count), 1.3, 1.7)
        centres = np.stack([x, y, z], -1)
        if (renderer.clearance(centres.astype(np.float32)) < CAMERA_CLEARANCE).any():
            continue
        towards_middle = np.arctan2(size[1] / 2 - y, size[0] / 2 - x)
        sweep = rng.uniform(0.6, 1.1) * np.sin(2 * np.pi * rng.integers(2, 4) * s + rng.uniform(0, 2 * np.pi))
        yaw = towards_middle + sweep + _periodic_noise(rng, s, 0.15) + rng.normal(0, 0.015, count)
        pitch = -0.22 + _periodic_noise(rng, s, 0.12) + rng.normal(0, 0.015, count)
        roll = _periodic_noise(rng, s, 0.03) + rng.normal(0, 0.01, count)
        return [_look(c, a, b, r) for c, a, b, r in zip(centres, yaw, pitch, roll)]
    raise RuntimeError(f"no camera path clear of the furniture after {tries} tries (a generator bug)")


# ---------------------------------------------------------------------------------------------
# Rooms on disk


def room_parameters(
    *, seed: int, width: int = 876, height: int = 584, num_train: int = 48, num_test: int = 8, fov_x_deg: float = 90.0,
    num_points: int = 5000, point_noise: float = 0.01,
) -> dict:
    """The checked parameters of a room, as recorded in generator.json. ``fov_x_deg``: horizontal
    field of view (square pixels, principal point at the centre); ``num_points`` sparse points with
    Gaussian jitter of ``point_noise`` metres (std per axis)."""
    checks = [
        ("seed", seed, isinstance(seed, int) and seed >= 0, "an integer >= 0"),
        ("width", width, isinstance(width, int) and width >= 8, "an integer >= 8"),
        ("height", height, isinstance(height, int) and height >= 8, "an integer >= 8"),
        ("num_train", num_train, isinstance(num_train, int) and num_train >= 1, "an integer >= 1"),
        ("num_test", num_test, isinstance(num_test, int) and num_test >= 0, "an integer >= 0"),
        ("fov_x_deg", fov_x_deg, isinstance(fov_x_deg, (int, float)) and 20 <= fov_x_deg <= 120, "in [20, 120] degrees"),
        ("num_points", num_points, isinstance(num_points, int) and num_points >= 1, "an integer >= 1"),
        ("point_noise", point_noise, isinstance(point_noise, (int, float)) and 0 <= point_noise <= 1, "in [0, 1] metres"),
    ]
    for field, value, ok, expected in checks:
        if not ok or isinstance(value, bool):
            raise RoomParameterError(field, f"{value!r} must be {expected}")
    return dict(generator_version=GENERATOR_VERSION, seed=seed, width=width, height=height, num_train=num_train,
                num_test=num_test, fov_x_deg=float(fov_x_deg), num_points=num_points, point_noise=float(point_noise))


def recorded_parameters(room_dir: str | os.PathLike) -> dict | None:
    """The parameters a generated room was made with, or None where there is no generator.json."""
    path = Path(room_dir) / GENERATOR_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _test_indices(count: int, num_test: int) -> set[int]:
    return {int((k + 0.5) * count / num_test) for k in range(num_test)}


def _sparse_points(rng, views, renders, num_points: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Points on the surfaces the training views see, with their rendered colours, jittered."""
    per_view = np.full(len(views), num_points // len(views))
    per_view[: num_points % len(views)] += 1
    xyz, rgb = [], []
    for view, (image, depth), count in zip(views, renders, per_view):
        flat = rng.choice(view.width * view.height, size=count, replace=count > view.width * view.height)
        i, j = np.divmod(flat, view.width)
        z = depth[i, j].astype(np.float64)
        camera = np.stack([(j + 0.5 - view.cx) / view.fx * z, (i + 0.5 - view.cy) / view.fy * z, z], -1)
        rotation, translation = view.world_to_camera[:3, :3], view.world_to_camera[:3, 3]
        xyz.append((camera - translation) @ rotation)
        rgb.append(image[i, j])
    xyz = np.concatenate(xyz)
    return xyz + rng.normal(0, noise, xyz.shape), np.concatenate(rgb)


def _write_room(folder: Path, params: dict) -> None:
    seed = params["seed"]
    palette = _Palette(np.random.default_rng([seed, 0]))
    layout = _furnish(palette.rng, palette)
    renderer = _Renderer(layout, palette)
    count = params["num_train"] + params["num_test"]
    poses = _camera_path(np.random.default_rng([seed, 1]), renderer, count)
    width, height = params["width"], params["height"]
    focal = width / 2 / math.tan(math.radians(params["fov_x_deg"]) / 2)
    for sub in ("images", "depth", "labels"):
        (folder / sub).mkdir(parents=True)
    test_indices = _test_indices(count, params["num_test"]) if params["num_test"] else set()
    train, test, train_renders = [], [], []
    for k, pose in enumerate(poses):
        name = f"frame_{k:05d}.png"
        view = View(name=Path(name).stem, image_path=folder / "images" / name, width=width, height=height, fx=focal, fy=focal,
                    cx=width / 2, cy=height / 2, world_to_camera=pose, depth_path=folder / "depth" / name,
                    label_path=folder / "labels" / name)
        image, depth, labels = renderer.render(view)
        millimetres = np.rint(depth * 1000)
        if millimetres.max() >= 2 ** 16:
            raise RuntimeError(f"depth {depth.max():.1f} m does not fit a uint16 millimetre PNG (a generator bug)")
        for path, pixels in ((view.image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), (view.depth_path, millimetres.astype(np.uint16)),
                             (view.label_path, labels)):
            if not cv2.imwrite(str(path), pixels):
                raise OSError(f"{path}: cannot write")
        if k in test_indices:
            test.append(view)
        else:
            train.append(view)
            train_renders.append((image, depth))
    points, colours = _sparse_points(np.random.default_rng([seed, 2]), train, train_renders, params["num_points"], params["point_noise"])
    nerfstudio.write_scene(SceneData(name=folder.name, root=folder, train=tuple(train), test=tuple(test), points=points,
                                     point_colors=colours, classes=CLASSES))
    (folder / GENERATOR_FILE).write_text(json.dumps(params, indent=1) + "\n")


def has_room(out_dir: str | os.PathLike, *, seed: int, **parameters) -> bool:
    """Whether ``out_dir`` holds room ``seed`` generated with these parameters."""
    return recorded_parameters(out_dir) == room_parameters(seed=seed, **parameters)


def generate_room(out_dir: str | os.PathLike, *, seed: int, overwrite: bool = False, **parameters) -> Path:
    """Renders room ``seed`` into the scene folder ``out_dir`` and returns it; ``parameters`` and
    their defaults are ``room_parameters``'s (image size, view counts, field of view, sparse points).

    The folder appears only when complete (written beside it, then renamed). An existing folder is
    an error unless ``overwrite`` (then it must be a generated room, which is replaced).
    """
    params = room_parameters(seed=seed, **parameters)
    out_dir = Path(out_dir)
    if out_dir.exists():
        recorded = recorded_parameters(out_dir)
        if recorded is None:
            raise FileExistsError(f"{out_dir} exists and is not a generated room (no {GENERATOR_FILE}); not replacing it")
        if not overwrite:
            differ = sorted(k for k in params if recorded.get(k) != params[k])
            raise FileExistsError(f"{out_dir} holds a room generated with other {', '.join(differ) or 'nothing'}; "
                                  "remove it, choose another folder or overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_room(staging, params)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def ensure_room(out_dir: str | os.PathLike, *, seed: int, **parameters) -> Path:
    """``out_dir`` if it holds room ``seed`` generated with these parameters, else generates it
    there (an existing folder with anything else in it is an error, see ``generate_room``)."""
    if has_room(out_dir, seed=seed, **parameters):
        return Path(out_dir)
    return generate_room(out_dir, seed=seed, **parameters)
