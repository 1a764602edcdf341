"""Fixtures shared by the tests: seeds (fixed, or a sweep with --random-seeds), a tiny random ViT
and a short lifting schedule; and the two tiers. ``python -m pytest`` runs the fast tier (units,
kernels against their references, one smoke run and one resume per stage); tests marked ``slow``
(whole jobs end to end, subprocess runs, long equivalence checks) run with ``-m slow`` alone, or
with everything else under ``--runslow`` or ``FIT3D_RUN_SLOW=1``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import zlib

# One compilation cache for the session and the job subprocesses it starts (they inherit the
# variables), in a folder of its own: programs compiled once serve every later identical run,
# and nothing carries over between sessions. Set before JAX is imported.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="fit3d_jax_test_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # several workers share a GPU: allocate on demand, not 75 % each
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fit3d_jax.lift import fit, trainer  # noqa: E402
from fit3d_jax.lift.strategy import DefaultStrategy  # noqa: E402
from fit3d_jax.models.dinov2 import ViTConfig, init_params  # noqa: E402
from fit3d_jax.weights import save_params  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--random-seeds", action="store_true",
                     help="draw a fresh seed for every seeded test (a sweep); by default each test has a fixed seed")
    parser.addoption("--runslow", action="store_true", help="run the slow tier too (or FIT3D_RUN_SLOW=1; -m slow runs it alone)")


def pytest_collection_modifyitems(config, items):
    """Without --runslow, FIT3D_RUN_SLOW=1 or a -m expression that names them, slow tests are
    deselected: the default run is the fast tier."""
    if config.getoption("--runslow") or os.environ.get("FIT3D_RUN_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def draw_seed(request) -> int:
    """A fixed seed per test (from its id: a CI failure reproduces), or with --random-seeds a fresh
    one; either way it is reported with the test's result."""
    if request.config.getoption("--random-seeds"):
        value = int(np.random.SeedSequence().entropy % 2**31)
    else:
        value = zlib.crc32(request.node.nodeid.encode()) % 2**31
    if hasattr(request.node, "user_properties"):  # a test (module-scoped fixtures print it instead)
        request.node.user_properties.append(("seed", value))
    else:
        print(f"{request.node.nodeid}: seed {value}")
    return value


@pytest.fixture
def seed(request) -> int:
    return draw_seed(request)


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A random 2-block ViT (D = 32) as an Orbax checkpoint: fast targets for tests."""
    config = ViTConfig(embed_dim=32, depth=2, num_heads=2)
    path = tmp_path_factory.mktemp("vit") / "tiny"
    save_params(path, init_params(config, seed=0), config)
    return path


def short_recipe(iterations: int) -> trainer.Recipe:
    """Feature and decoder learning rates large enough to move features that start at zero."""
    return trainer.Recipe(iterations=iterations, feature_dim=8, sh_every=iterations // 4, lr_features=1e-2, lr_decoder=1e-3)


def short_strategy(iterations: int, **fields) -> DefaultStrategy:
    """Densification every 10 iterations over the middle of the run."""
    return DefaultStrategy(**dict(densify_from=iterations // 10, densify_until=3 * iterations // 4, densify_every=10,
                                  opacity_reset_every=0, size_prune_from=iterations // 2) | fields)


def short_fit(scene, weights, out, iterations, **kw) -> dict:
    return fit.fit_scene(scene, weights, short_recipe(iterations), out, progress=False, strategy=short_strategy(iterations), **kw)
