"""Metrics through clu's ``MetricWriter`` interface: TensorBoard event files (tensorboardX, which
needs neither TensorFlow nor PyTorch) and a JSONL log beside them, so that
``tensorboard --logdir outputs/`` shows every run and the JSONL stays greppable."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from clu.metric_writers import interface, multi_writer

JSONL = "train_log.jsonl"


class JsonlWriter(interface.MetricWriter):
    """One JSON object per ``write_scalars`` call: ``{"step": step, name: value, ...}``, appended
    (a resumed run continues the file). Non-finite values are refused: nothing NaN reaches a log."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{self.path}: refusing to log non-finite {', '.join(bad)} at step {step}")
        self._file.write(json.dumps({"step": int(step), **values}) + "\n")

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


class TensorBoardWriter(interface.MetricWriter):
    """Scalars and images as TensorBoard event files in ``logdir``."""

    def __init__(self, logdir: Path):
        import tensorboardX

        self._writer = tensorboardX.SummaryWriter(str(logdir), flush_secs=30)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        for key, value in scalars.items():
            self._writer.add_scalar(key, float(np.asarray(value)), global_step=int(step))

    def write_images(self, step: int, images: Mapping[str, Any]):
        for key, value in images.items():
            self._writer.add_image(key, np.asarray(value), global_step=int(step), dataformats="HWC")

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step: int, texts: Mapping[str, str]):
        for key, value in texts.items():
            self._writer.add_text(key, value, global_step=int(step))

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams: Mapping[str, Any]):
        self._writer.add_text("hparams", json.dumps({k: str(v) for k, v in hparams.items()}, indent=1), global_step=0)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def create_writer(workdir: Path, *, enabled: bool = True) -> interface.MetricWriter:
    """TensorBoard events and ``train_log.jsonl`` in ``workdir``; a writer that writes nothing
    where ``enabled`` is False (the processes other than the first)."""
    workdir = Path(workdir)
    return multi_writer.MultiWriter([JsonlWriter(workdir / JSONL), TensorBoardWriter(workdir)] if enabled else [])
