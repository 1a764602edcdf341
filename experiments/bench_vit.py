"""ViT throughput, fit3d_jax (Flax) against timm, in one process on one GPU: any of the timm
models FiT3D fine-tunes (--model; default the DINOv2 ViT-S/14).

Cells: forward at batch 32 and forward+backward (gradient of the mean patch token w.r.t. all
parameters) at batch 8, 574x868 images (41x62 tokens; 576x864, 36x54 tokens, for the patch-16
models), float32 and bfloat16. --accuracy-only reports the output errors alone. JAX runs with
float32 parameters and the compute dtype set on the model (float32: true fp32 matmuls unless
--fp32-precision says otherwise); timm runs plain in float32 and under torch.autocast in
bfloat16. Both models hold the same random weights (timm's, imported with fit3d_jax.weights), so
the table also reports how far the JAX outputs are from timm's float32 outputs.

Each cell: warm-up runs, then --runs timed runs, each synchronised (block_until_ready /
torch.cuda.synchronize); images/s = batch / median time.

    python experiments/bench_vit.py --out experiments/results/bench_vit_h100.json
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with PyTorch

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import timm
import torch

from fit3d_jax.models.dinov2 import DinoV2
from fit3d_jax.weights import load_weights
from timing import median_ms

TARGET_SPEEDUP = 1.1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--model", default="vit_small_patch14_dinov2", help="a timm model name (fit3d_jax.models.dinov2.TIMM_MODELS)")
    parser.add_argument("--height", type=int, default=0, help="default: 574 (patch 14) or 576 (patch 16)")
    parser.add_argument("--width", type=int, default=0, help="default: 868 (patch 14) or 864 (patch 16)")
    parser.add_argument("--accuracy-only", action="store_true", help="only the output errors against timm float32")
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--backward-batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--fp32-precision", default="float32", help="jax_default_matmul_precision for JAX float32")
    parser.add_argument("--attention", default=None, choices=["cudnn", "fused", "xla"], help="JAX attention (default: auto)")
    parser.add_argument("--remat", action="store_true", help="JAX: recompute blocks in the backward pass")
    parser.add_argument("--no-attention", action="store_true",
                        help="both models: attention returns its values v (what everything but attention costs)")
    return parser.parse_args()


def timm_model(name: str = "vit_small_patch14_dinov2") -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, num_classes=0)
    with torch.no_grad():  # LayerScale starts at 1e-5 in timm: make every block matter
        for param_name, p in model.named_parameters():
            if param_name.endswith(".gamma"):
                p.uniform_(0.1, 0.5)
    return model.cuda()


def timm_tokens(model, images: torch.Tensor, dtype: str) -> np.ndarray:
    """Final-norm tokens [CLS, patches] (B, 1 + h*w, D) as float32 numpy (registers left out)."""
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        tokens = model.forward_features(images).float()
    return torch.cat([tokens[:, :1], tokens[:, model.num_prefix_tokens:]], dim=1).cpu().numpy()


def bench_timm(model, images: torch.Tensor, dtype: str, backward: bool, args) -> float:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        if not backward:
            with torch.no_grad(), autocast:
                return model.forward_features(images)
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = model.forward_features(images)[:, model.num_prefix_tokens:].float().mean()
        loss.backward()
        return loss

    return median_ms(step, lambda _: torch.cuda.synchronize(), warmup=args.warmup, runs=args.runs) / 1e3


def jax_model(weights, dtype: str, args) -> DinoV2:
    return DinoV2(
        weights.config,
        dtype=jnp.dtype(dtype),
        remat=args.remat,
        matmul_precision=args.fp32_precision,
        attention=args.attention,
    )


def jax_tokens(model: DinoV2, params, images: np.ndarray) -> np.ndarray:
    """Final-norm tokens [CLS, patches] (B, 1 + h*w, D) as float32 numpy."""
    out = jax.jit(model.apply)({"params": params}, images)
    patches = out.patch_tokens.reshape(images.shape[0], -1, out.cls_token.shape[-1])
    return np.asarray(jnp.concatenate([out.cls_token[:, None], patches], axis=1), np.float32)


def bench_jax(model: DinoV2, params, images: np.ndarray, backward: bool, args) -> tuple[float, float]:
    """(median seconds, compile seconds)."""
    x = jax.device_put(images)
    if backward:
        fn = jax.jit(jax.grad(lambda p, x: jnp.mean(model.apply({"params": p}, x).patch_tokens)))
    else:
        fn = jax.jit(model.apply)
        params = {"params": params}
    start = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    compile_seconds = time.perf_counter() - start
    return median_ms(lambda: compiled(params, x), jax.block_until_ready, warmup=args.warmup, runs=args.runs) / 1e3, compile_seconds


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(got - reference).max() / np.abs(reference).max())


def drop_attention() -> None:
    """Softmax attention -> its values, in both models (for the split of time, not for outputs)."""
    from fit3d_jax.models import dinov2

    dinov2.xla_attention = dinov2.cudnn_attention = lambda q, k, v: v
    torch.nn.functional.scaled_dot_product_attention = lambda q, k, v, **_: v  # timm calls F.<this>


def main() -> None:
    args = parse_args()
    if args.no_attention:
        drop_attention()
    torch.backends.cuda.matmul.allow_tf32 = False  # timm float32 = true fp32, like JAX's default
    torch.backends.cudnn.allow_tf32 = False
    model = timm_model(args.model).train()  # no dropout / drop-path in these models; train() only matters for autograd
    patch = model.patch_embed.patch_size[0]
    args.height, args.width = args.height or (574 if patch == 14 else 576), args.width or (868 if patch == 14 else 864)
    if args.no_attention and not all(block.attn.fused_attn for block in model.blocks):
        raise SystemExit("--no-attention: timm is not calling F.scaled_dot_product_attention here")
    with tempfile.TemporaryDirectory() as tmp:  # timm's random weights, through our importer
        path = Path(tmp) / "timm.safetensors"
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
        weights = load_weights(path, format="timm")

    params = jax.device_put(weights.params)
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((2, args.height, args.width, 3)).astype(np.float32)  # accuracy check input
    torch_probe = torch.from_numpy(probe).permute(0, 3, 1, 2).contiguous().cuda()
    reference = timm_tokens(model, torch_probe, "float32")
    results = []
    for dtype in args.dtypes.split(","):
        jax_vit = jax_model(weights, dtype, args)
        errors = dict(
            jax_rel_err_vs_timm_fp32=relative_error(jax_tokens(jax_vit, params, probe), reference),
            timm_rel_err_vs_timm_fp32=relative_error(timm_tokens(model, torch_probe, dtype), reference),
        )
        if args.accuracy_only:
            results.append(dict(dtype=dtype, **errors))
            continue
        for backward, batch in ((False, args.forward_batch), (True, args.backward_batch)):
            images = rng.standard_normal((batch, args.height, args.width, 3)).astype(np.float32)
            torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().cuda()
            t_timm = bench_timm(model, torch_images, dtype, backward, args)
            del torch_images
            torch.cuda.empty_cache()
            t_jax, compile_s = bench_jax(jax_vit, params, images, backward, args)
            results.append(dict(
                dtype=dtype, mode="fwd+bwd" if backward else "forward", batch=batch,
                timm_ms=1e3 * t_timm, timm_images_per_s=batch / t_timm,
                jax_ms=1e3 * t_jax, jax_images_per_s=batch / t_jax, jax_compile_s=compile_s,
                speedup=t_timm / t_jax, **errors,
            ))
    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        device=torch.cuda.get_device_name(),
        jax_devices=[str(d) for d in jax.devices()],
        versions=dict(python=platform.python_version(), jax=jax.__version__, torch=torch.__version__, timm=timm.__version__),
        args={k: str(v) for k, v in vars(args).items()},
        model=args.model,
        config=weights.config.to_dict(),
        image_size=[args.height, args.width],
        target_speedup=TARGET_SPEEDUP,
        results=results,
        all_cells_meet_target=None if args.accuracy_only else all(r["speedup"] >= TARGET_SPEEDUP for r in results),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print(f"{args.model} ({weights.config.name}) {args.height}x{args.width} on {report['device']} ({report['date']})")
    header = f"{'dtype':9} {'mode':8} {'batch':>5} {'timm img/s':>11} {'jax img/s':>10} {'speedup':>8} {'jax err':>9} {'timm err':>9}"
    print(header)
    for r in results:
        if args.accuracy_only:
            print(f"{r['dtype']:9} {'':8} {'':>5} {'':>11} {'':>10} {'':>8} {r['jax_rel_err_vs_timm_fp32']:>9.1e} "
                  f"{r['timm_rel_err_vs_timm_fp32']:>9.1e}")
            continue
        print(f"{r['dtype']:9} {r['mode']:8} {r['batch']:>5} {r['timm_images_per_s']:>11.1f} {r['jax_images_per_s']:>10.1f}"
              f" {r['speedup']:>7.2f}x {r['jax_rel_err_vs_timm_fp32']:>9.1e} {r['timm_rel_err_vs_timm_fp32']:>9.1e}")
    print(f"(errors: max |out - timm fp32 forward| / max |timm fp32|, forward outputs of 2 images)\nwrote {args.out}")


if __name__ == "__main__":
    main()
