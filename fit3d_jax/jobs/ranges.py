"""Every numeric and enumerated config field's range, in one place, checked when a job starts
(``check``) with an error that names the field; and the notes a run's settings deserve
(``notes``: a warm-up as long as the run, logging less often than the run is long).

A name means one thing in every config: ``clip_norm`` 0 is "no clipping" for stage II and the
probes alike, a probability is in [0, 1] wherever it appears, ``seed`` is a non-negative integer.
Paths and weights are checked by the code that reads them."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence

import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.lift.strategy import STRATEGIES
from fit3d_jax.lift.trainer import DTYPES
from fit3d_jax.models.dinov2 import INPUT_STATISTICS, INTERPOLATIONS
from fit3d_jax.probe.assembly import ASSEMBLIES
from fit3d_jax.probe.datasets import TASKS
from fit3d_jax.weights import FORMATS


@dataclasses.dataclass(frozen=True)
class Rule:
    ok: Callable[[object], bool]
    says: str  # what a value must be, e.g. "> 0"


def _number(ok: Callable[[float], bool], says: str, integer: bool = False) -> Rule:
    def test(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or (integer and not isinstance(v, numbers.Integral)):
            return False
        return v == v and ok(v)  # NaN fails

    return Rule(test, says + (" (an integer)" if integer else ""))


def at_least(n: int) -> Rule:
    return _number(lambda v: v >= n, f">= {n}", integer=True)


POSITIVE = _number(lambda v: v > 0, "> 0")
NON_NEGATIVE = _number(lambda v: v >= 0, ">= 0")
PROBABILITY = _number(lambda v: 0 <= v <= 1, "in [0, 1]")
FRACTION = _number(lambda v: 0 < v <= 1, "in (0, 1]")
COUNT = at_least(1)
INDEX = at_least(0)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of {list(choices)}")


def pair(rule: Rule, ordered: bool = True) -> Rule:
    """Two values each following ``rule`` (the first <= the second if ``ordered``)."""
    def test(v):
        return (isinstance(v, Sequence) and len(v) == 2 and all(rule.ok(x) for x in v) and (not ordered or v[0] <= v[1]))

    return Rule(test, f"a pair of values {rule.says}" + (", low <= high" if ordered else ""))


DTYPE = one_of(*DTYPES)
RUN = {"seed": INDEX, "log_every": COUNT, "checkpoint_every": COUNT}
WEIGHTS = {"weights_format": one_of("", *FORMATS), "interpolation": one_of("", *INTERPOLATIONS),
           "input_statistics": one_of("", *INPUT_STATISTICS, "model")}
ROOM = {"width": at_least(16), "height": at_least(16), "num_train": COUNT, "num_test": INDEX, "seed": INDEX}

LIFT_RECIPE = {
    **{f: POSITIVE for f in ("lr_means", "lr_means_final", "lr_scales", "lr_quats", "lr_opacity", "lr_sh_dc", "lr_sh_rest",
                             "lr_features", "lr_decoder")},
    "iterations": COUNT, "feature_dim": COUNT, "sh_every": COUNT, "lambda_dssim": PROBABILITY, "lambda_feature": NON_NEGATIVE,
    "decoder_dtype": DTYPE, "target_dtype": DTYPE,
}
LIFT_STRATEGY = {
    "name": one_of(*STRATEGIES), "densify_from": INDEX, "densify_until": INDEX, "densify_every": COUNT,
    "densify_grad_threshold": NON_NEGATIVE, "percent_dense": POSITIVE, "min_opacity": PROBABILITY, "opacity_reset_every": INDEX,
    "max_screen_size": POSITIVE, "size_prune_from": INDEX,
}
PROBE_SCHEDULE = {
    "learning_rate": POSITIVE, "weight_decay": NON_NEGATIVE, "iterations": COUNT, "warmup_iterations": INDEX,
    "warmup_ratio": FRACTION, "policy": one_of("poly", "cosine"), "power": POSITIVE, "min_lr": NON_NEGATIVE,
    "min_lr_ratio": NON_NEGATIVE, "momentum": one_of("constant", "onecycle"), "clip_norm": NON_NEGATIVE, "batch_size": COUNT,
}
PROBE_AUGMENT = {
    "crop": pair(COUNT, ordered=False), "flip_prob": PROBABILITY, "scale": pair(INDEX, ordered=False), "ratio_range": pair(POSITIVE),
    "cat_max_ratio": FRACTION, "rotate_prob": PROBABILITY, "rotate_degrees": NON_NEGATIVE, "color_prob": PROBABILITY,
    "gamma_range": pair(POSITIVE), "brightness_range": pair(POSITIVE), "color_range": pair(POSITIVE), "color_gamma": one_of("raw", "unit"),
    "canvas": pair(INDEX, ordered=False),
}
PROBE_PROTOCOL = {
    "features": one_of("fit3d", "dinov2"), "output_resize": one_of("stretch", "crop"), "seg_loss_average": one_of("all_pixels", "labelled"),
    "depth_loss": one_of("sigloss", "sigloss+gradient", "classification"), "depth_loss_group": INDEX, "sigloss_warmup": INDEX,
}

# Per job: dotted field -> rule. A section's rules also apply to its copy under ``quick`` (the lift's
# CPU preset), so a preset cannot carry a value the field refuses.
FIELDS: dict[str, dict[str, Rule]] = {
    "lift": {
        **RUN, **WEIGHTS, "budget": one_of("auto", "paper", "quick"), "test_every": INDEX,
        **{f"room.{k}": r for k, r in ROOM.items()},
        **{f"recipe.{k}": r for k, r in LIFT_RECIPE.items()}, **{f"strategy.{k}": r for k, r in LIFT_STRATEGY.items()},
        **{f"quick.recipe.{k}": r for k, r in LIFT_RECIPE.items()}, **{f"quick.strategy.{k}": r for k, r in LIFT_STRATEGY.items()},
    },
    "finetune": {
        **RUN, **WEIGHTS, "recipe.learning_rate": POSITIVE, "recipe.weight_decay": NON_NEGATIVE, "recipe.clip_norm": NON_NEGATIVE,
        "recipe.batch_size": COUNT, "recipe.epochs": POSITIVE, "recipe.flip_probability": PROBABILITY, "max_steps": INDEX,
        "dtype": DTYPE, "grad_reduce_dtype": one_of("", *DTYPES), "device_cache_gb": NON_NEGATIVE,
        "compare_views": INDEX, "num_clusters": COUNT,
    },
    "probe": {
        **RUN, **WEIGHTS, "task": one_of(*TASKS), "assembly": one_of(*ASSEMBLIES), "dtype": DTYPE,
        "decoded_cache_gb": Rule(lambda v: isinstance(v, numbers.Real) and (v >= 0 or v == -1), ">= 0, or -1 (automatic)"),
        "device_dataset_gb": NON_NEGATIVE,
        **{f"schedule.{k}": r for k, r in PROBE_SCHEDULE.items()}, **{f"augment.{k}": r for k, r in PROBE_AUGMENT.items()},
        **{f"protocol.{k}": r for k, r in PROBE_PROTOCOL.items()},
        "evaluation.mode": one_of("slide", "whole"), "evaluation.crop": pair(COUNT, ordered=False),
        "evaluation.stride": pair(COUNT, ordered=False), "evaluation.max_images": INDEX, "evaluation.num_visualize": INDEX,
    },
    "features": {**WEIGHTS, "seed": INDEX, "short_side": INDEX, "num_clusters": COUNT, "dtype": DTYPE},
    "generate_rooms": {**{k: r for k, r in ROOM.items() if k != "seed"}, "num_rooms": COUNT, "first_seed": INDEX, "num_workers": INDEX,
                       "fov_x_deg": _number(lambda v: 0 < v < 180, "in (0, 180)"), "num_points": COUNT, "point_noise": NON_NEGATIVE},
    "prepare_scannetpp": {"downscale_factor": _number(lambda v: v >= 1, ">= 1"), "workers": INDEX},
    "import_weights": {**WEIGHTS},
    "convert_torch": {},
}
# Fields that must keep an order: (field, field it may not be below).
ORDERED = {"lift": (("strategy.densify_until", "strategy.densify_from"), ("quick.strategy.densify_until", "quick.strategy.densify_from"))}


def _get(config: ml_collections.ConfigDict, dotted: str):
    value = config
    for part in dotted.split("."):
        if part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first field of ``config`` (of job ``config.job``) whose value is
    out of its range."""
    job = config.get("job")
    for dotted, rule in FIELDS.get(job, {}).items():
        value = _get(config, dotted)
        if value is not _MISSING and not rule.ok(value):
            raise ConfigError(f"config.{dotted}={value!r} must be {rule.says}")
    for high, low in ORDERED.get(job, ()):
        a, b = _get(config, high), _get(config, low)
        if a is not _MISSING and b is not _MISSING and a < b:
            raise ConfigError(f"config.{high}={a} is below config.{low}={b}")


def notes(config: ml_collections.ConfigDict) -> list[str]:
    """What a user should hear before a run whose settings make part of it meaningless."""
    out = []
    schedule = config.get("schedule")
    if schedule is not None and schedule.warmup_iterations >= schedule.iterations:
        out.append(f"note: config.schedule.warmup_iterations={schedule.warmup_iterations} >= iterations={schedule.iterations}: "
                   "the whole run is warm-up, at a fraction of the learning rate")
    steps = config.get("max_steps") or (schedule.iterations if schedule is not None else None)
    if steps and "log_every" in config and config.log_every > steps:
        out.append(f"note: config.log_every={config.log_every} > the run's {steps} steps: only the last step is logged")
    return out
