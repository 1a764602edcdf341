"""ViT throughput, fit3d_jax (Flax) against PyTorch, in one process on one GPU: any of the timm
models FiT3D fine-tunes against timm (--model; default the DINOv2 ViT-S/14), and the DINOv3 S/16
and B/16 against transformers' DINOv3ViTModel (--model dinov3_vits16 / dinov3_vitb16).

Cells: forward at batch 32 and forward+backward (gradient of the mean patch token w.r.t. all
parameters) at batch 8, 574x868 images (41x62 tokens; 576x864, 36x54 tokens, for the patch-16
models), float32 and bfloat16 (--dtypes, --modes pick cells). --accuracy-only reports the output
errors alone; --trace DIR also profiles each JAX cell (--trace-torch: each PyTorch cell; CUPTI
takes one profiler per process) and writes the GPU time per kernel class, to see where one side loses. JAX runs with
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
import dataclasses
import datetime
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import timm
import torch

from fit3d_jax.models.dinov2 import DINOV3_MODELS, FORWARD_COMPILER_OPTIONS, NAMED_MODELS, DinoV2
from fit3d_jax.weights import load_weights
from timing import median_ms, summarise_kernels, trace_jax

TARGET_SPEEDUP = 1.1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--model", default="vit_small_patch14_dinov2", help="a name in fit3d_jax.models.dinov2.NAMED_MODELS")
    parser.add_argument("--height", type=int, default=0, help="default: 574 (patch 14) or 576 (patch 16)")
    parser.add_argument("--width", type=int, default=0, help="default: 868 (patch 14) or 864 (patch 16)")
    parser.add_argument("--accuracy-only", action="store_true", help="only the output errors against PyTorch float32")
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--backward-batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--modes", default="forward,fwd+bwd")
    parser.add_argument("--trace", type=Path, default=None, help="profile every JAX cell; GPU time per kernel class into the JSON")
    parser.add_argument("--trace-torch", action="store_true", help="profile every PyTorch cell instead")
    parser.add_argument("--fp32-precision", default="float32", help="jax_default_matmul_precision for JAX float32")
    parser.add_argument("--attention", default=None, choices=["cudnn", "fused", "xla"], help="JAX attention (default: auto)")
    parser.add_argument("--remat", action="store_true", help="JAX: recompute blocks in the backward pass")
    parser.add_argument("--no-attention", action="store_true",
                        help="both models: attention returns its values v (what everything but attention costs)")
    return parser.parse_args()


@dataclasses.dataclass
class Reference:
    """The PyTorch model beside ours: timm's VisionTransformer, or transformers' DINOv3ViTModel."""

    model: torch.nn.Module
    prefix: int  # tokens before the patches in its output: CLS and registers
    patch: int
    forward: Callable[[torch.Tensor], torch.Tensor]  # images NCHW -> final-norm tokens (B, prefix + N, D)
    attention_via_sdpa: bool


def timm_reference(name: str, folder: Path) -> tuple[Reference, object]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, num_classes=0)
    with torch.no_grad():  # LayerScale starts at 1e-5 in timm: make every block matter
        for param_name, p in model.named_parameters():
            if param_name.endswith(".gamma"):
                p.uniform_(0.1, 0.5)
    from safetensors.torch import save_file  # timm's random weights, through our importer

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, folder / "timm.safetensors")
    weights = load_weights(folder / "timm.safetensors", format="timm")
    fused = all(block.attn.fused_attn for block in model.blocks)
    return Reference(model.cuda(), model.num_prefix_tokens, model.patch_embed.patch_size[0], model.forward_features, fused), weights


def dinov3_reference(name: str, folder: Path) -> tuple[Reference, object]:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    width, heads = NAMED_MODELS[name]["embed_dim"], NAMED_MODELS[name]["num_heads"]
    config = DINOv3ViTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width, num_hidden_layers=12,
                             num_register_tokens=4, patch_size=16, layerscale_value=1.0, layer_norm_eps=1e-5)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = DINOv3ViTModel(config)
    with torch.no_grad():  # every parameter random (layer scales, norms and the key bias too), matrices ~ 1/sqrt(fan in)
        for param_name, p in model.named_parameters():
            scale = 1 / np.sqrt(np.prod(p.shape[1:])) if p.ndim > 1 and "token" not in param_name else 0.2
            p.copy_((1.0 if param_name.endswith("norm.weight") or ".norm" in param_name and param_name.endswith("weight") else 0.0)
                    + scale * torch.randn(p.shape))
    model.save_pretrained(folder)  # config.json + model.safetensors, the HF layout
    weights = load_weights(str(folder))
    forward = lambda images: model(pixel_values=images).last_hidden_state
    return Reference(model.cuda(), 5, 16, forward, True), weights


def reference_tokens(ref: Reference, images: torch.Tensor, dtype: str) -> np.ndarray:
    """Final-norm tokens [CLS, patches] (B, 1 + h*w, D) as float32 numpy (registers left out)."""
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        tokens = ref.forward(images).float()
    return torch.cat([tokens[:, :1], tokens[:, ref.prefix:]], dim=1).cpu().numpy()


def reference_step(ref: Reference, images: torch.Tensor, dtype: str, backward: bool) -> Callable[[], object]:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        if not backward:
            with torch.no_grad(), autocast:
                return ref.forward(images)
        ref.model.zero_grad(set_to_none=True)
        with autocast:
            loss = ref.forward(images)[:, ref.prefix:].float().mean()
        loss.backward()
        return loss

    return step


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


def jax_step(model: DinoV2, params, images: np.ndarray, backward: bool) -> tuple[Callable[[], object], float]:
    """(the compiled call on fixed inputs, compile seconds)."""
    x = jax.device_put(images)
    if backward:
        fn = jax.jit(jax.grad(lambda p, x: jnp.mean(model.apply({"params": p}, x).patch_tokens)))
    else:  # as the library's forward-only programs compile it
        fn = jax.jit(model.apply, compiler_options=FORWARD_COMPILER_OPTIONS)
        params = {"params": params}
    start = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    return (lambda: compiled(params, x)), time.perf_counter() - start


def kernel_class(name: str) -> str:
    lowered = name.lower()
    if any(key in lowered for key in ("fmha", "flash", "attention", "attn", "softmax")):
        return "attention"
    if any(key in lowered for key in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "triton_dot", "matmul")):
        return "matmul"
    return "other (norms, activations, copies)"


def trace_torch(fn: Callable[[], object], calls: int = 5) -> dict:
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    durations = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            durations[event.name] = durations.get(event.name, 0.0) + event.time_range.elapsed_us()
    return summarise_kernels(durations, calls, kernel_class)


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(got - reference).max() / np.abs(reference).max())


def drop_attention() -> None:
    """Softmax attention -> its values, in both models (for the split of time, not for outputs)."""
    from fit3d_jax.models import dinov2

    dinov2.xla_attention = dinov2.cudnn_attention = lambda q, k, v: v
    torch.nn.functional.scaled_dot_product_attention = lambda q, k, v, **_: v  # timm and transformers call F.<this>


def main() -> None:
    args = parse_args()
    if args.no_attention:
        drop_attention()
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch float32 = true fp32, like JAX's default
    torch.backends.cudnn.allow_tf32 = False
    library = "transformers" if args.model in DINOV3_MODELS else "timm"
    with tempfile.TemporaryDirectory() as tmp:  # the reference's random weights, through our importer
        ref, weights = (dinov3_reference if library == "transformers" else timm_reference)(args.model, Path(tmp))
    ref.model.eval()  # no dropout in these models, but transformers' DINOv3 would train-augment its RoPE
    args.height, args.width = args.height or (574 if ref.patch == 14 else 576), args.width or (868 if ref.patch == 14 else 864)
    if args.no_attention and not ref.attention_via_sdpa:
        raise SystemExit(f"--no-attention: {library} is not calling F.scaled_dot_product_attention here")

    params = jax.device_put(weights.params)
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((2, args.height, args.width, 3)).astype(np.float32)  # accuracy check input
    torch_probe = torch.from_numpy(probe).permute(0, 3, 1, 2).contiguous().cuda()
    reference = reference_tokens(ref, torch_probe, "float32")
    results = []
    for dtype in args.dtypes.split(","):
        jax_vit = jax_model(weights, dtype, args)
        errors = dict(
            jax_rel_err_vs_torch_fp32=relative_error(jax_tokens(jax_vit, params, probe), reference),
            torch_rel_err_vs_torch_fp32=relative_error(reference_tokens(ref, torch_probe, dtype), reference),
        )
        if args.accuracy_only:
            results.append(dict(dtype=dtype, **errors))
            continue
        for mode in args.modes.split(","):
            backward, batch = mode == "fwd+bwd", args.backward_batch if mode == "fwd+bwd" else args.forward_batch
            images = rng.standard_normal((batch, args.height, args.width, 3)).astype(np.float32)
            torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().cuda()
            step = reference_step(ref, torch_images, dtype, backward)
            t_torch = median_ms(step, lambda _: torch.cuda.synchronize(), warmup=args.warmup, runs=args.runs) / 1e3
            kernels = dict(torch=trace_torch(step)) if args.trace_torch else {}
            del torch_images, step
            torch.cuda.empty_cache()
            call, compile_s = jax_step(jax_vit, params, images, backward)
            t_jax = median_ms(call, jax.block_until_ready, warmup=args.warmup, runs=args.runs) / 1e3
            if args.trace and not args.trace_torch:
                kernels["jax"] = trace_jax(call, args.trace / f"{args.model}_{dtype}_{mode}", kernel_class)
            results.append(dict(
                dtype=dtype, mode=mode, batch=batch,
                torch_ms=1e3 * t_torch, torch_images_per_s=batch / t_torch,
                jax_ms=1e3 * t_jax, jax_images_per_s=batch / t_jax, jax_compile_s=compile_s,
                speedup=t_torch / t_jax, **errors, **(dict(gpu_kernels=kernels) if kernels else {}),
            ))
            del call
    versions = dict(python=platform.python_version(), jax=jax.__version__, torch=torch.__version__, timm=timm.__version__)
    if library == "transformers":
        import transformers

        versions["transformers"] = transformers.__version__
    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        device=torch.cuda.get_device_name(),
        jax_devices=[str(d) for d in jax.devices()],
        versions=versions,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        args={k: str(v) for k, v in vars(args).items()},
        model=args.model,
        reference=library,
        config=weights.config.to_dict(),
        image_size=[args.height, args.width],
        target_speedup=TARGET_SPEEDUP,
        results=results,
        all_cells_meet_target=None if args.accuracy_only else all(r["speedup"] >= TARGET_SPEEDUP for r in results),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print(f"{args.model} ({weights.config.name}) {args.height}x{args.width} against {library} on {report['device']} ({report['date']})")
    print(f"{'dtype':9} {'mode':8} {'batch':>5} {'torch img/s':>11} {'jax img/s':>10} {'speedup':>8} {'jax err':>9} {'torch err':>9}")
    for r in results:
        if args.accuracy_only:
            print(f"{r['dtype']:9} {'':8} {'':>5} {'':>11} {'':>10} {'':>8} {r['jax_rel_err_vs_torch_fp32']:>9.1e} "
                  f"{r['torch_rel_err_vs_torch_fp32']:>9.1e}")
            continue
        print(f"{r['dtype']:9} {r['mode']:8} {r['batch']:>5} {r['torch_images_per_s']:>11.1f} {r['jax_images_per_s']:>10.1f}"
              f" {r['speedup']:>7.2f}x {r['jax_rel_err_vs_torch_fp32']:>9.1e} {r['torch_rel_err_vs_torch_fp32']:>9.1e}")
        for side, summary in r.get("gpu_kernels", {}).items():
            classes = ", ".join(f"{k} {v:.2f}" for k, v in summary["classes_ms"].items())
            print(f"    {side:5} GPU {summary['total_ms']:.2f} ms/call: {classes}")
    print(f"(errors: max |out - {library} fp32 forward| / max |{library} fp32|, forward outputs of 2 images)\nwrote {args.out}")


if __name__ == "__main__":
    main()
