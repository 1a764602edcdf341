"""Writes built-in rooms as a raw ScanNet++ download (fisheye DSLR JPGs, masks, COLMAP text, the
toolkit's transforms.json, mesh and segments), the input of the ScanNet++ chain experiments:
prepare_scannetpp, then the lift.

python experiments/make_scannetpp_release.py --out /work/gen/release --train-seeds 11 --views 150 --test-views 16 \
    --points 20000        # 1752x1168, as ScanNet++'s resized_images
"""

from __future__ import annotations

import argparse
import time

from fit3d_jax.scenes.synthetic.scannetpp_release import generate_release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[11], help="rooms of split nvs_sem_train")
    parser.add_argument("--val-seeds", type=int, nargs="*", default=[], help="rooms of split nvs_sem_val")
    parser.add_argument("--width", type=int, default=1752)
    parser.add_argument("--height", type=int, default=1168)
    parser.add_argument("--views", type=int, default=150, help="training frames per room")
    parser.add_argument("--test-views", type=int, default=16)
    parser.add_argument("--points", type=int, default=20000)
    args = parser.parse_args()
    splits = {"nvs_sem_train": args.train_seeds} | ({"nvs_sem_val": args.val_seeds} if args.val_seeds else {})
    start = time.perf_counter()
    root = generate_release(args.out, splits=splits, width=args.width, height=args.height, num_train=args.views,
                            num_test=args.test_views, num_points=args.points)
    print(f"{root}: written in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
