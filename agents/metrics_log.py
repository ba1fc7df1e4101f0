"""Training telemetry: TensorBoard scalars, a progress bar with rates, and a NaN/Inf guard."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Mapping


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/Inf; names the loss and the step."""

    def __init__(self, name: str, value: float, step: int):
        self.name, self.value, self.step = name, value, step
        super().__init__(f"loss {name!r} became {value} at learner step {step}; training stopped, "
                         f"the last good checkpoint is kept")


def check_finite(metrics: Mapping[str, float], step: int) -> None:
    """Raises NonFiniteLossError for the first non-finite `*loss*` metric."""
    for name, value in metrics.items():
        if "loss" in name and not math.isfinite(float(value)):
            raise NonFiniteLossError(name, float(value), step)


class TrainingLog:
    """TensorBoard writer (`<workdir>/tensorboard`) + tqdm bar showing learner steps/s and losses."""

    def __init__(self, workdir: str, total_steps: int, start_step: int, description: str,
                 show_progress: bool = True):
        import tensorflow as tf
        from tqdm import tqdm

        self._tf = tf
        self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=start_step, desc=description, unit="step",
                        disable=not show_progress, file=sys.stderr, dynamic_ncols=True)
        self._last_time, self._last_step = time.perf_counter(), start_step

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                self._tf.summary.scalar(f"{prefix}{name}", float(value))
        self.writer.flush()

    def progress(self, step: int, metrics: Mapping[str, float]) -> float:
        """Advances the bar to `step`; returns learner steps/s since the last call."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        self.bar.update(step - self.bar.n)
        shown = {k: f"{float(v):.3g}" for k, v in metrics.items() if k in ("critic_loss", "actor_loss", "bc_loss", "q_mean")}
        self.bar.set_postfix(**shown, steps_s=f"{rate:.1f}")
        return rate

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]: a learner call that went from step
    `before` to `after` is due what happens every `every` steps (a log, a checkpoint)."""
    return after // every > before // every
