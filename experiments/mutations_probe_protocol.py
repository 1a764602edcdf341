"""Mutation check of the probe protocol's tests (issue #16): each piece of FiT3D's protocol is
changed by hand, once, and the tests that guard it must then fail. Each mutation edits one source
file of this checkout in place, runs the named tests, and restores the file (also on Ctrl-C).
Run it from an editable install of a clean tree:

    python experiments/mutations_probe_protocol.py --out experiments/results/mutations_probe_protocol_<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS, DATA = "tests/test_probe_units.py", "tests/test_probe_data.py"

# (piece, file, original text, mutated text, tests that must fail)
MUTATIONS = [
    ("depth features: final-norm tokens instead of the raw last block", "fit3d_jax/probe/assembly.py",
     'return self.task == DEPTH and self.tokens == "fit3d"', "return False", [f"{UNITS}::test_depth_tokens_are_raw_with_the_first_models_cls"]),
    ("depth features: the fine-tuned model's CLS", "fit3d_jax/probe/assembly.py",
     "cls = (first or second)[1]", "cls = (second or first)[1]", [f"{UNITS}::test_depth_tokens_are_raw_with_the_first_models_cls"]),
    ("centre padding: the larger half on top", "fit3d_jax/probe/heads.py",
     "return (self.padded_height - self.height) // 2", "return -(-(self.padded_height - self.height) // 2)",
     [f"{UNITS}::test_placement_for_size_pad_crop_roundtrip"]),
    ("output resize: crop instead of stretch", "fit3d_jax/probe/heads.py",
     "            return (self.height, self.width), (0, 0)",
     "            return (self.padded_height, self.padded_width), (self.top, self.left)",
     [f"{UNITS}::test_segmentation_head_matches_manual_computation", f"{UNITS}::test_depth_head_matches_manual_computation_and_range"]),
    ("cross-entropy: over labelled pixels instead of all", "fit3d_jax/probe/losses.py",
     "count = valid.size if all_pixels else", "count = jnp.maximum(jnp.sum(valid), 1) if all_pixels else",
     [f"{UNITS}::test_segmentation_cross_entropy_matches_mmseg_and_torch"]),
    ("cosine schedule: starting after the warm-up", "fit3d_jax/probe/train.py",
     "half_cosine(step / s.iterations)", "half_cosine(jnp.maximum(step - s.warmup_iterations, 0) / s.iterations)",
     [f"{UNITS}::test_learning_rate_is_mmcv_cosine_with_linear_warmup"]),
    ("warm-up: added to the rate instead of scaling it", "fit3d_jax/probe/train.py",
     "jnp.where(step < s.warmup_iterations, regular * warm, regular)",
     "jnp.where(step < s.warmup_iterations, regular * warm + 1e-7, regular)",
     [f"{UNITS}::test_learning_rate_is_mmcv_cosine_with_linear_warmup"]),
    ("one-cycle beta1: the turn one iteration late", "fit3d_jax/probe/train.py",
     "turn = pct_start * iterations - 1", "turn = pct_start * iterations", [f"{UNITS}::test_one_cycle_beta1_is_mmcv_one_cycle_momentum"]),
    ("flip test: the mirrored prediction not mirrored back", "fit3d_jax/probe/inference.py",
     "passes = [out[:n], out[n:, :, ::-1]]", "passes = [out[:n], out[n:]]", [f"{UNITS}::test_dense_predictor_depth_whole_mode_is_clamped"]),
    ("Eigen crop: the training crop's columns", "fit3d_jax/probe/datasets/types.py",
     "EIGEN_CROP = box_crop(45, 471, 41, 601", "EIGEN_CROP = box_crop(45, 471, 43, 608", [f"{DATA}::test_nyu_depth_split_files"]),
    ("Garg crop: KITTI's Eigen fractions", "fit3d_jax/probe/datasets/types.py",
     "fraction_crop(0.40810811, 0.99189189,", "fraction_crop(0.3324324, 0.91351351,", [f"{DATA}::test_kitti_kb_crop_and_garg_crop"]),
    ("KB crop: the top rows", "fit3d_jax/probe/datasets/files.py",
     "top, left = height - KITTI_KB_CROP[0],", "top, left = 0,", [f"{DATA}::test_kitti_kb_crop_and_garg_crop"]),
    ("NYUCrop: the evaluation window", "fit3d_jax/probe/datasets/types.py",
     "NYU_TRAIN_CROP = (slice(45, 472), slice(43, 608))", "NYU_TRAIN_CROP = (slice(45, 471), slice(41, 601))",
     [f"{DATA}::test_nyu_depth_split_files"]),
    ("depth metrics: pooled over the batch instead of per image", "fit3d_jax/probe/metrics.py",
     "mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0), axis=(1, 2)) / jnp.maximum(n, 1.0)",
     "mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(jnp.sum(n), 1.0) + 0 * n",
     [f"{UNITS}::test_depth_metrics_match_numpy_per_image_reference"]),
    ("SigLoss: one pool over the batch instead of per 2 images", "fit3d_jax/probe/losses.py",
     "if group in (0, batch):", "if True:", [f"{UNITS}::test_depth_task_loss_and_reduce"]),
    ("SigLoss: pixels beyond max_depth left out", "fit3d_jax/probe/tasks.py",
     "valid = losses.depth_valid(target, None)", "valid = losses.depth_valid(target, self.dataset.max_depth)",
     [f"{UNITS}::test_depth_task_loss_and_reduce"]),
    ("ColorAug: gamma of [0, 1] values", "fit3d_jax/probe/augment.py",
     "pixels = np.clip(crop.astype(np.float64) ** gamma * brightness * colors, 0, 255)",
     "pixels = np.clip((crop.astype(np.float64) / 255) ** gamma * 255 * brightness * colors, 0, 255)",
     [f"{UNITS}::test_depth_colour_augmentation"]),
    ("reduce_zero_label: not applied", "fit3d_jax/probe/datasets/files.py",
     "label = np.where(label == 0, IGNORE_INDEX, label - 1)", "label = label", [f"{DATA}::test_segmentation_folders_reduce_zero_label"]),
]


def run_tests(tests: list[str]) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--runslow", *tests], cwd=ROOT,
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else done.stderr[-200:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = []
    for piece, file_name, original, mutated, tests in MUTATIONS:
        path = ROOT / file_name
        text = path.read_text()
        if text.count(original) != 1:
            raise SystemExit(f"{file_name}: the text to mutate for {piece!r} is not there exactly once: {original!r}")
        t0 = time.time()
        try:
            path.write_text(text.replace(original, mutated))
            code, summary = run_tests(tests)
        finally:
            path.write_text(text)
        results.append({"piece": piece, "file": file_name, "tests": tests, "caught": code == 1, "pytest": summary,
                        "seconds": round(time.time() - t0, 1)})
        print(f"{'caught' if code == 1 else 'MISSED'}  {piece}: {summary}")
    clean_code, clean = run_tests(sorted({t for m in MUTATIONS for t in m[4]}))
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "unmutated": clean, "unmutated_passed": clean_code == 0,
              "mutations": results, "caught": sum(r["caught"] for r in results), "total": len(results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['caught']} of {report['total']} mutations caught; unmutated: {clean}")


if __name__ == "__main__":
    main()
