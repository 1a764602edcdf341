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

from fit3d_jax.scenes.synthetic.camera_path import CAMERA_CLEARANCE
from fit3d_jax.scenes.synthetic.furniture import CLASSES, LABELS
from fit3d_jax.scenes.synthetic.rooms import (
    GENERATOR_FILE,
    GENERATOR_VERSION,
    RoomParameterError,
    ensure_room,
    generate_room,
    has_room,
    recorded_parameters,
    room_parameters,
)

__all__ = [
    "CAMERA_CLEARANCE", "CLASSES", "GENERATOR_FILE", "GENERATOR_VERSION", "LABELS", "RoomParameterError", "ensure_room",
    "generate_room", "has_room", "recorded_parameters", "room_parameters",
]
