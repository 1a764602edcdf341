"""Finding, checking, registering, calling and building the FFI kernel libraries (the
rasterizer's stages, the fused attention and the fused segmentation loss).

``pip install`` compiles ``libfit3d_ffi_cpu.so`` into ``fit3d_jax/_lib``. The CUDA library is
built on the GPU machine, against that machine's own jaxlib, with::

    python -m fit3d_jax.kernels build --cuda        # CPU + CUDA, into the user cache

Libraries are searched, first match per platform wins, in ``$FIT3D_KERNELS_DIR``, the user cache
(``$FIT3D_CACHE``/kernels/jaxlib-<version>, default ``~/.cache/fit3d_jax``) and the installed
package. A library is used only if it was built against the FFI ABI of the running jaxlib.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib

from fit3d_jax.errors import FitError

PLATFORMS = {"cpu": "cpu", "cuda": "CUDA"}  # library suffix -> XLA platform name
TARGETS = (
    "project_forward", "project_backward", "rasterize_forward", "rasterize_backward",
    "attention_forward", "attention_backward", "cross_entropy",
)
SOURCE_DIR = Path(__file__).resolve().parent.parent / "ffi_kernels"


class KernelLibraryError(FitError, RuntimeError):
    """No usable kernel library for a platform; the message says how to build one."""


def cache_root() -> Path:
    return Path(os.environ.get("FIT3D_CACHE", Path.home() / ".cache" / "fit3d_jax"))


def user_build_dir() -> Path:
    return cache_root() / "kernels" / f"jaxlib-{jaxlib.__version__}"


def runtime_ffi_version() -> int:
    """FFI API version (major*1000 + minor) of the running jaxlib, read from its headers."""
    header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
    text = header.read_text()
    major = int(re.search(r"#define XLA_FFI_API_MAJOR (\d+)", text).group(1))
    minor = int(re.search(r"#define XLA_FFI_API_MINOR (\d+)", text).group(1))
    return major * 1000 + minor


def _installed_lib_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parent / "_lib"]
    try:  # the wheel's copy, also when the source tree shadows the installed package
        for f in importlib.metadata.files("fit3d_jax") or []:
            if f.name.startswith("libfit3d_ffi_"):
                dirs.append(Path(f.locate()).resolve().parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    return dirs


def candidate_paths(suffix: str) -> list[Path]:
    dirs = []
    if "FIT3D_KERNELS_DIR" in os.environ:
        dirs.append(Path(os.environ["FIT3D_KERNELS_DIR"]))
    dirs += [user_build_dir()] + _installed_lib_dirs()
    seen, paths = set(), []
    for d in dirs:
        p = d / f"libfit3d_ffi_{suffix}.so"
        if p not in seen and p.exists():
            seen.add(p)
            paths.append(p)
    return paths


@functools.cache
def load(suffix: str) -> Path:
    """Loads and registers the library for ``suffix`` ('cpu' or 'cuda'); returns its path."""
    want = runtime_ffi_version()
    rejected = []
    for path in candidate_paths(suffix):
        try:
            lib = ctypes.CDLL(str(path))
            lib.fit3d_ffi_api_version.restype = ctypes.c_int
        except (OSError, AttributeError) as e:  # not a shared library, or not ours
            rejected.append(f"{path} (not a fit3d_jax kernel library: {e})")
            continue
        have = lib.fit3d_ffi_api_version()
        if have != want:
            rejected.append(f"{path} (built for FFI {have // 1000}.{have % 1000})")
            continue
        for target in TARGETS:
            fn = getattr(lib, f"fit3d_{target}_{suffix}")
            jax.ffi.register_ffi_target(f"fit3d_{target}", jax.ffi.pycapsule(fn), platform=PLATFORMS[suffix])
        if rejected:
            warnings.warn(f"fit3d_jax: using {path}; passed over {', '.join(rejected)}", stacklevel=2)
        return path
    why = f"rejected: {', '.join(rejected)}; " if rejected else ""
    flag = " --cuda" if suffix == "cuda" else ""
    raise KernelLibraryError(
        f"No fit3d_jax {suffix} kernel library for jaxlib {jaxlib.__version__} (FFI "
        f"{want // 1000}.{want % 1000}); {why}build one with: python -m fit3d_jax.kernels build{flag}"
    )


def available(suffix: str) -> bool:
    try:
        load(suffix)
        return True
    except KernelLibraryError:
        return False


@functools.cache
def load_all() -> set[str]:
    """Registers every library usable in this process (CPU always, CUDA where JAX sees a GPU)
    so that a computation placed on either platform finds its kernels; returns their suffixes."""
    suffixes = {"cpu"}
    try:
        if jax.devices("gpu"):
            suffixes.add("cuda")
    except RuntimeError:
        pass
    return {s for s in suffixes if available(s)}


def call(name: str, out_shapes, *args, vmap_method: str = "sequential", **attrs):
    """Calls custom call ``fit3d_<name>`` (registering the libraries on first use). Under vmap
    the calls run one after another, or, with ``vmap_method="expand_dims"``, as one call that
    gets the batch (the rasterizer stages handle it)."""
    load_all()
    return jax.ffi.ffi_call(f"fit3d_{name}", out_shapes, vmap_method=vmap_method)(*args, **attrs)


def build(cuda: bool, out_dir: Path, cuda_arch: str = "90", jobs: int | None = None) -> Path:
    """Configures, compiles and installs the kernel libraries against this jaxlib."""
    if shutil.which("cmake") is None:
        raise KernelLibraryError("cmake is needed to build the kernels (pip install cmake ninja)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fit3d_build_") as build_dir:
        configure = [
            "cmake", "-S", str(SOURCE_DIR), "-B", build_dir,
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DJAX_FFI_INCLUDE_DIR={jax.ffi.include_dir()}",
            f"-DCMAKE_INSTALL_PREFIX={out_dir}",
            f"-DFIT3D_CUDA={'ON' if cuda else 'OFF'}",
        ]
        if cuda:
            configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", build_dir, "-j", str(jobs or os.cpu_count() or 2)], check=True)
        subprocess.run(["cmake", "--install", build_dir], check=True)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fit3d_jax.kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the kernel libraries against the installed jaxlib")
    b.add_argument("--cuda", action="store_true", help="also build the CUDA library (needs nvcc)")
    b.add_argument("--arch", default="90", help="CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200)")
    b.add_argument("--out", type=Path, default=None, help=f"install directory (default {user_build_dir()})")
    b.add_argument("-j", "--jobs", type=int, default=None)
    sub.add_parser("info", help="show which libraries would be used")
    args = parser.parse_args(argv)
    if args.command == "build":
        out = build(args.cuda, args.out or user_build_dir(), args.arch, args.jobs)
        print(f"Installed kernel libraries into {out}")
        if args.out is not None and args.out != user_build_dir():
            print(f"Point fit3d_jax at them with FIT3D_KERNELS_DIR={out}")
    else:
        for suffix in PLATFORMS:
            try:
                print(f"{suffix}: {load(suffix)}")
            except KernelLibraryError as e:
                print(f"{suffix}: unavailable ({e})")


if __name__ == "__main__":
    main()
