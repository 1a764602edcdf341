"""Stage I: lift DINOv2 features of scenes into 3D feature Gaussians (the project's main job).

python -m fit3d_jax.main --config=configs/lift.py                       # built-in synthetic room
python -m fit3d_jax.main --config=configs/lift.py --config.scenes=/data/scannetpp/0a5c013435,/data/other
python -m fit3d_jax.main --config=configs/lift.py --config.scenes=/data/scannetpp   # every scene inside
python -m fit3d_jax.main --config=configs/lift.py --config.scenes=outputs/scannetpp --config.split=nvs_sem_train

Scenes: FiT3D's ScanNet++ scene folders (transforms_train.json with frames and test_frames, images/,
masks/, points3D.txt; configs/prepare_scannetpp.py makes them from the raw download), undistorted
ScanNet++ dslr/ folders, or a COLMAP model (sparse/0 + images/). Budget 'auto' runs the authors' 30k
iterations on accelerators and the short `quick` schedule on CPUs: minutes, for the built-in
room. It compresses the 3DGS schedule without opacity resets (they need thousands of iterations
to recover from) and raises the feature and decoder learning rates, because the authors' 6.25e-5
barely moves features that start at zero within a few hundred iterations. Its densification
threshold is 6e-4 rather than 2e-4: small images give larger view-space gradients per Gaussian
(measured on the 160x108 room: 158k Gaussians at 2e-4, 52k at 6e-4, held-out PSNR 27.5 vs
26.0 dB, 4.1 vs 2.8 minutes on 2 CPU cores).
"""

import ml_collections

import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "lift"
    # '' = the built-in room below; else comma-separated scene folders (FiT3D's, ScanNet++ dslr/ folders, COLMAP),
    # folders of scenes, FiT3D's data root (prepare_scannetpp's output) or a ScanNet++ download with its scenes undistorted
    c.scenes = ""
    c.split = ""  # with a data root: its split(s), e.g. nvs_sem_train (FiT3D's 230 scenes); '' = all of a FiT3D root
    c.skip_non_scenes = False  # a folder of scenes with other folders in it: an error naming them, or (True) skip them
    c.test_every = 8  # COLMAP scenes: every n-th image is held out (0 = none)
    c.room = ml_collections.ConfigDict(
        dict(output_dir="outputs/rooms", seed=0, width=160, height=108, num_train=20, num_test=4)
    )
    common.weights(c)  # the 2D model whose features are lifted
    # Several 2D models lifted on one geometry (one pass per scene instead of one per model): comma-separated
    # name=weights, each weights as config.weights takes them; a model name (FiT3D's dinov2_small, dinov2_base,
    # dinov2_reg_small, clip_base, mae_base, deit3_base; timm's; dinov3_vits16 ...) checks its weights.
    # Outputs per name: <output_dir>/store/<name>/ (stage II's store), <output_dir>/<scene>/<name>/. '' = config.weights alone.
    c.backbones = ""
    # The authors' recipe (3DGS with a feature head): 30k iterations, Adam per parameter group.
    c.recipe = ml_collections.ConfigDict(dict(
        iterations=30_000, feature_dim=64,
        lr_means=1.6e-4, lr_means_final=1.6e-6,  # times the scene extent, decaying exponentially
        lr_scales=5e-3, lr_quats=1e-3, lr_opacity=0.05, lr_sh_dc=2.5e-3, lr_sh_rest=1.25e-4, lr_features=6.25e-5,
        lr_decoder=6.25e-5, lambda_dssim=0.2, lambda_feature=1.0,
        sh_every=1000,  # one more SH degree every this many iterations (up to 3)
        # bfloat16: the decoder's convolutions on tensor cores (float32 accumulation) and the targets' forward in bfloat16
        # (float32 residual stream); float32 for either as the authors (TF32 convolutions on GPUs)
        decoder_dtype="bfloat16", target_dtype="bfloat16",
    ))
    # Densification (lift.strategy): 'default' is 3DGS's adaptive density control with the authors' thresholds.
    c.strategy = ml_collections.ConfigDict(dict(
        name="default", densify_from=500, densify_until=15_000, densify_every=100, densify_grad_threshold=2e-4,
        percent_dense=0.01, min_opacity=0.005,
        opacity_reset_every=3000,  # 0 = no reset
        max_screen_size=20.0, size_prune_from=3000,  # pixels; pruning by size after the first opacity reset
    ))
    c.budget = "auto"  # auto (paper on accelerators, quick on CPUs) | paper | quick
    c.quick = ml_collections.ConfigDict(dict(  # what 'quick' replaces; fields set on the command line win
        recipe=dict(iterations=500, sh_every=100, lr_features=1e-2, lr_decoder=1e-3),
        strategy=dict(densify_from=50, densify_until=350, densify_every=25, opacity_reset_every=0, size_prune_from=150,
                      densify_grad_threshold=6e-4),
    ))
    common.run(c, output_dir="outputs/lift", log_every=100, checkpoint_every=1000)
    return c
