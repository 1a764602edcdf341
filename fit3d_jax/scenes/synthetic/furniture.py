"""Room layouts: furniture built from boxes, placed without overlaps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fit3d_jax.scenes.synthetic.textures import Palette, colour

CLASSES = ("void", "wall", "floor", "ceiling", "table", "chair", "shelf", "bed", "cabinet", "box", "lamp", "picture")
LABELS = {name: i for i, name in enumerate(CLASSES)}


@dataclasses.dataclass(frozen=True)
class Box:
    centre: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents along the box's own axes
    material: int  # on every face
    label: str
    yaw: float = 0.0  # rotation about +z

    def moved(self, offset, yaw: float) -> Box:
        """This box after rotating its parent by ``yaw`` about the origin and translating by ``offset``."""
        c, s = math.cos(yaw), math.sin(yaw)
        x, y, z = self.centre
        centre = np.array([c * x - s * y, s * x + c * y, z]) + np.asarray(offset, np.float64)
        return dataclasses.replace(self, centre=centre, yaw=self.yaw + yaw)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        extent = np.array([c * self.half[0] + s * self.half[1], s * self.half[0] + c * self.half[1], self.half[2]])
        return self.centre - extent, self.centre + extent


def _box(centre, size, material, label: str, yaw: float = 0.0) -> Box:
    return Box(np.asarray(centre, np.float64), np.asarray(size, np.float64) / 2, material, label, yaw)


def _bounds(boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    lows, highs = zip(*(b.bounds() for b in boxes))
    return np.min(lows, axis=0), np.max(highs, axis=0)


def _place(boxes: list[Box], offset, yaw: float) -> list[Box]:
    return [b.moved(offset, yaw) for b in boxes]


# Builders: objects in their own frame, standing on z = 0, centred on x, their back towards +y.


def _table(rng, palette: Palette, width: float, depth: float) -> list[Box]:
    height, leg = rng.uniform(0.72, 0.78), rng.uniform(0.04, 0.07)
    top, legs = palette.wood(), palette.wood() if rng.uniform() < 0.5 else palette.metal()
    boxes = [_box((0, 0, height - 0.02), (width, depth, 0.04), top, "table")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes.append(_box((sx * (width / 2 - leg), sy * (depth / 2 - leg), (height - 0.04) / 2), (leg, leg, height - 0.04), legs, "table"))
    return boxes


def _chair(rng, palette: Palette) -> list[Box]:
    side, seat_h, back_h, leg = rng.uniform(0.4, 0.5), rng.uniform(0.43, 0.48), rng.uniform(0.35, 0.5), 0.04
    seat = palette.fabric() if rng.uniform() < 0.5 else palette.wood()
    frame = palette.wood()
    boxes = [_box((0, 0, seat_h), (side, side, 0.05), seat, "chair"),
             _box((0, side / 2 - 0.02, seat_h + 0.025 + back_h / 2), (side, 0.04, back_h), frame, "chair")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes.append(_box((sx * (side / 2 - leg / 2), sy * (side / 2 - leg / 2), (seat_h - 0.025) / 2), (leg, leg, seat_h - 0.025),
                              frame, "chair"))
    return boxes


def _table_set(rng, palette: Palette, against_wall: bool) -> list[Box]:
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


def _shelf(rng, palette: Palette) -> list[Box]:
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
            material = (palette.cardboard() if rng.uniform() < 0.5
                        else palette.photo_patch(colour(rng, (0.3, 0.9), (0.3, 0.9)), (0.0, 0.4), (0.2, 0.4)))
            boxes.append(_box((x + w / 2, -0.01, z0 + board / 2 + h / 2), (w, d, h), material, "box"))
            x += w + rng.uniform(0.01, 0.15)
    return boxes


def _bed(rng, palette: Palette) -> list[Box]:
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


def _cabinet(rng, palette: Palette) -> list[Box]:
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


def _box_stack(rng, palette: Palette) -> list[Box]:
    boxes, z = [], 0.0
    for _ in range(rng.integers(1, 4)):
        w, d, h = rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.45)
        if z + h > 1.1:
            break
        boxes.append(_box((0, 0, z + h / 2), (w, d, h), palette.cardboard(), "box", rng.uniform(-0.3, 0.3)))
        z += h
    return boxes


def _floor_lamp(rng, palette: Palette) -> list[Box]:
    """A pole and a glowing shade (the last box, where its light is)."""
    height, metal = rng.uniform(1.4, 1.7), palette.metal()
    shade = rng.uniform(0.3, 0.45)
    boxes = [_box((0, 0, 0.015), (0.3, 0.3, 0.03), metal, "lamp"),
             _box((0, 0, height / 2), (0.03, 0.03, height), metal, "lamp"),
             _box((0, 0, height + 0.12), (shade, shade, 0.28), palette.glow(), "lamp")]
    return boxes


def _picture(rng, palette: Palette, centre_z: float) -> list[Box]:
    canvas, aspect = palette.picture()
    width = rng.uniform(0.35, 0.9)
    height = width * aspect
    frame = palette.wood() if rng.uniform() < 0.7 else palette.metal()
    border = rng.uniform(0.02, 0.06)
    return [_box((0, 0, centre_z), (width + 2 * border, 0.03, height + 2 * border), frame, "picture"),
            _box((0, -0.016, centre_z), (width, 0.004, height), canvas, "picture")]


@dataclasses.dataclass
class Layout:
    size: np.ndarray  # (3,) room extent
    boxes: list[Box]  # furniture
    room_materials: tuple[int, ...]  # per face code of the room's inside
    lights: np.ndarray  # (K, 3) point-light positions
    light_power: np.ndarray  # (K,)


class _Furnisher:
    """Places objects without overlaps: against a wall (back to it) or free-standing."""

    def __init__(self, rng: np.random.Generator, size: np.ndarray):
        self.rng, self.size = rng, size
        self.boxes: list[Box] = []
        self.occupied: list[tuple[np.ndarray, np.ndarray]] = []

    def _fits(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        if (lo < -1e-9).any() or (hi > self.size + 1e-9).any():
            return False
        margin = 0.03
        return not any((lo < h + margin).all() and (hi > low - margin).all() for low, h in self.occupied)

    def add(self, boxes: list[Box], *, wall: bool, tries: int = 40) -> bool:
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


def furnish(rng: np.random.Generator, palette: Palette) -> Layout:
    size = np.array([rng.uniform(4.0, 7.0), rng.uniform(3.5, 6.0), rng.uniform(2.5, 3.0)])
    paint = colour(rng, (0.0, 0.25), (0.7, 0.95))
    wall = palette.tinted(("gravel", "moon", "cell"), paint, (0.1, 0.3), (1.0, 2.0))
    accent = palette.tinted(("brick",), colour(rng, (0.1, 0.5), (0.5, 0.9)), (0.5, 0.8), (1.0, 1.6))
    walls = [accent if rng.uniform() < 0.25 else wall for _ in range(4)]
    floor_tint = colour(rng, (0.2, 0.6), (0.3, 0.7))
    floor = (palette.tinted(("grass", "gravel", "brick", "moon"), floor_tint, (0.3, 0.7), (0.5, 1.5))
             if rng.uniform() < 0.6 else palette.photo_patch(floor_tint, (0.3, 0.6), (0.6, 1.2)))
    ceiling = palette.tinted(("gravel", "moon"), colour(rng, (0.0, 0.1), (0.8, 0.95)), (0.05, 0.2), (1.0, 2.0))
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
    return Layout(size, furnisher.boxes, room_materials, np.array(lights), np.array(power))
