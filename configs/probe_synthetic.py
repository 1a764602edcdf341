"""Linear probes on the built-in synthetic rooms (segmentation of 11 classes, or depth):
training rooms and disjoint test rooms, generated on first use when the defaults are kept.

python -m fit3d_jax.main --config=configs/probe_synthetic.py                  # original features
python -m fit3d_jax.main --config=configs/probe_synthetic.py:depth --config.assembly=concat \
    --config.finetuned=outputs/finetune/checkpoints

Defaults suit a CPU: features cached once per training view (no augmentation), whole-image
inference, a short schedule. experiments/reproduce_synthetic.py runs the paper's comparison.
"""

import common


def get_config(task: str = "segmentation"):
    data = dict(name="scenes", train="", test="", min_depth=1e-3, max_depth=10.0, ignore_ids=(0,))
    c = common.probe_depth(data, crop=(210, 308)) if task == "depth" else common.probe_segmentation(data)
    # The protocol's optimiser settings, shortened: 600 steps of 8, 50 of warm-up.
    c.schedule.update(learning_rate=1e-3, iterations=600, warmup_iterations=50, batch_size=8)
    c.evaluation.update(mode="whole", num_visualize=6)
    c.augment.scale = (0, 0)  # rooms are probed at their rendered size
    c.cache_features = True
    c.assembly = "original"
    # Used when data.train / data.test are empty: rooms seeds 100.. (train) and 200.. (test).
    c.rooms = dict(output_dir="outputs/rooms/probe", width=320, height=216, train_rooms=6, test_rooms=2, views=12)
    c.output_dir = f"outputs/probe/synthetic_{task}"
    return c
