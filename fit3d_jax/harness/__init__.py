"""The training harness every stage's loop uses (the Flax examples' and big_vision's shape): resume
and checkpoints on a cadence (``checkpoints``), metrics through clu's writers to TensorBoard and
JSONL (``writers``), progress with steps/s, ETA and timed sections (``loop``), the non-finite guard
(``guard``), the device mesh (``mesh``) and the output folder's rules (``outputs``). Each stage keeps
only its state, its jitted step and its data."""

import importlib.util
import sys
import types

# clu's metric_writers package imports its TensorFlow summary writer when it is imported. This
# project writes TensorBoard files with tensorboardX, so TensorFlow is not needed: without it the
# TensorFlow writer is replaced by a stand-in that nothing here uses.
if importlib.util.find_spec("tensorflow") is None and "clu.metric_writers.summary_writer" not in sys.modules:
    _stand_in = types.ModuleType("clu.metric_writers.summary_writer")
    _stand_in.SummaryWriter = None
    sys.modules["clu.metric_writers.summary_writer"] = _stand_in
