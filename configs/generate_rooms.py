"""Generate built-in synthetic rooms (nerfstudio-style scenes with depth and label images).

python -m fit3d_jax.main --config=configs/generate_rooms.py [--config.num_rooms=8] [--config.num_train=300]

Rooms go to <output_dir>/room_<seed>; a room already there with the same parameters is kept.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "generate_rooms"
    config.output_dir = "outputs/rooms"
    config.num_rooms = 4
    config.first_seed = 0  # rooms first_seed, first_seed + 1, ...
    config.width = 876
    config.height = 584
    config.num_train = 48
    config.num_test = 8  # interleaved along the camera path
    config.fov_x_deg = 90.0
    config.num_points = 5000  # sparse points3D.txt
    config.point_noise = 0.01  # metres (std) of the sparse points' jitter
    config.num_workers = 1  # rooms rendered in parallel processes; 0 = one per CPU core
    config.overwrite = False  # True: regenerate rooms that exist (with any parameters)
    return config
