"""ScanNet++ from the raw download to FiT3D's scene folders (and, optionally, probe ground truth).

python -m fit3d_jax.main --config=configs/prepare_scannetpp.py --config.data_root=/data/scannetpp
python -m fit3d_jax.main --config=configs/prepare_scannetpp.py --config.data_root=/data/scannetpp --config.probe_data=True

In one command, what FiT3D's preprocessing does with the toolkit's scripts: dslr/downscale.py (factor 2),
dslr/undistort.py and reorganize_data.py, with the same OpenCV calls and parameters. The raw download
is only read. Writes <output_dir>/scenes/<id>/ (images/, masks/, points3D.txt, transforms_train.json)
and <output_dir>/metadata/<split>.txt, which the lift reads:

python -m fit3d_jax.main --config=configs/lift.py --config.scenes=outputs/scannetpp --config.split=nvs_sem_train

With probe_data, it renders each frame's depth and top-100 labels from the scan's mesh into
<output_dir>/eval/ in FiT3D's evaluation layout, which configs/probe_scannetpp.py reads. Scenes run in
parallel processes; a scene prepared before with the same settings is kept, so a killed run resumes.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "prepare_scannetpp"
    c.data_root = ""  # the ScanNet++ download: data/, splits/, metadata/
    c.splits = "nvs_sem_train,nvs_sem_val"  # FiT3D: 230 training and 50 validation scenes
    c.output_dir = "outputs/scannetpp"
    c.downscale_factor = 2.0  # FiT3D: 1752x1168 -> 876x584, then undistorted
    c.probe_data = False  # also render probe depth and labels from the meshes
    c.probe_training_split = "nvs_sem_train"  # its scenes -> eval/{images,annotations,depth}/training
    c.probe_validation_split = "nvs_sem_val"  # -> .../validation
    c.workers = 0  # scenes in parallel processes; 0 = one per CPU core
    c.overwrite = False  # True: redo scenes this job prepared before with other settings
    return c
