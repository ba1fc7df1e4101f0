"""Charts of a training run and of an evaluation: TensorBoard scalars read back, PNGs drawn.

    scalars = read_scalars("runs/sft")        # {"eval/success_rate": [(step, wall_time, value), ...]}
    training_report("runs/sft", "runs/sft/report")   # success rate, episode length, ... as PNGs

Drawing uses matplotlib's Agg canvas directly (no pyplot, no display, no global backend).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

Point = tuple[float, float]
Scalar = tuple[int, float, float]  # (step, wall_time, value)

RATE_LIMITS = (-0.03, 1.03)
# Charts of training_report: file stem -> (title, y label, y limits, tags drawn when logged).
REPORT_METRICS: dict[str, tuple[str, str, tuple[float, float] | None, tuple[str, ...]]] = {
    "success_rate": ("Success rate", "success rate", RATE_LIMITS, ("eval/success_rate",)),
    "episode_length": ("Episode length", "steps", None, ("eval/mean_episode_length", "eval/mean_success_length")),
    "intervention_rate": ("Intervention rate", "intervened steps / steps", RATE_LIMITS,
                          ("train/intervention_rate", "eval/intervention_rate", "online/intervention_rate")),
}
# Tags whose TensorBoard step is not the learner step (the online actor logs per episode at env steps).
STEP_UNITS = {"online/": "env steps"}
SUCCESS_COLOUR, FAILURE_COLOUR = "#2ca02c", "#d62728"


# ---------------------------------------------------------------- reading


def event_files(workdir: str | os.PathLike) -> list[Path]:
    """Event files of `<workdir>/tensorboard` (or of `workdir` itself), oldest first."""
    root = Path(workdir) / "tensorboard"
    root = root if root.is_dir() else Path(workdir)
    files = sorted(root.rglob("events.out.tfevents.*"), key=lambda p: (_created(p), p.name))
    if not files:
        raise FileNotFoundError(f"{workdir}: no TensorBoard event files (looked in {root})")
    return files


def _created(path: Path) -> int:
    """The creation timestamp in an event file's name (`events.out.tfevents.<time>.<host>...`)."""
    stamp = path.name.split(".")[3]
    return int(stamp) if stamp.isdigit() else 0


def read_scalars(workdir: str | os.PathLike) -> dict[str, list[Scalar]]:
    """Every scalar of a run: tag -> [(step, wall_time, value)] sorted by step.

    Reads `tf.summary.scalar` tensors and legacy `simple_value`s; a truncated last record (a run
    still writing) ends that file quietly. A step logged twice (a resumed run) keeps its newest value.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in event_files(workdir):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value if event.HasField("summary") else ():
                number = _scalar_value(value)
                if number is None:
                    continue
                seen = latest.setdefault(value.tag, {})
                if event.step not in seen or event.wall_time >= seen[event.step][0]:
                    seen[event.step] = (event.wall_time, number)
    return {tag: [(step, wall, value) for step, (wall, value) in sorted(points.items())]
            for tag, points in sorted(latest.items())}


def _scalar_value(value) -> float | None:
    """The number of a summary value, or None when it is not a scalar (images, histograms, text)."""
    if value.WhichOneof("value") == "simple_value":
        return float(value.simple_value)
    if value.WhichOneof("value") != "tensor":
        return None
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(value.tensor)
    if array.size != 1 or array.dtype.kind not in "fiub":
        return None
    return float(array.reshape(()))


# ---------------------------------------------------------------- drawing


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_curves(series: Mapping[str, Sequence[Point]], path: str | os.PathLike, title: str,
                xlabel: str, ylabel: str, ylim: tuple[float, float] | None = None) -> str:
    """One line (with point markers) per label; writes a PNG and returns its path."""
    figure = _figure()
    axes = figure.add_subplot()
    for label, points in series.items():
        xs, ys = zip(*points) if points else ((), ())
        axes.plot(xs, ys, marker="o", markersize=4, label=label)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim:
        axes.set_ylim(*ylim)
    axes.grid(True, alpha=0.3)
    if series:
        axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_episode_lengths(lengths: Sequence[int], successes: Sequence[bool], path: str | os.PathLike,
                         title: str = "Evaluation episodes") -> str:
    """Bar per episode (length in steps), green = success, red = failure; writes a PNG."""
    from matplotlib.patches import Patch

    figure = _figure(max(4.0, min(12.0, 2.0 + 0.3 * len(lengths))), 3.6)
    axes = figure.add_subplot()
    colours = [SUCCESS_COLOUR if ok else FAILURE_COLOUR for ok in successes]
    axes.bar(range(len(lengths)), lengths, color=colours)
    axes.set(title=title, xlabel="episode", ylabel="length (steps)")
    if len(lengths) <= 40:
        axes.set_xticks(range(len(lengths)))
    axes.tick_params(axis="x", labelsize="small")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(handles=[Patch(color=SUCCESS_COLOUR, label=f"success ({sum(map(bool, successes))})"),
                         Patch(color=FAILURE_COLOUR, label=f"failure ({len(lengths) - sum(map(bool, successes))})")],
                loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _save(figure, path)


# ---------------------------------------------------------------- the training report


def training_report(workdir: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """PNGs of success rate, episode length and (if logged) intervention rate, each against learner
    steps (`<metric>_vs_steps.png`; `online/` tags are logged at env steps, the axis says so) and
    wall-clock minutes since the run's first scalar (`<metric>_vs_minutes.png`). Returns the paths
    written (none when the run logged none of these)."""
    scalars = read_scalars(workdir)
    start = min((wall for points in scalars.values() for _, wall, _ in points), default=0.0)
    run, out, written = Path(os.path.abspath(workdir)).name, Path(out_dir), []
    for stem, (title, ylabel, ylim, tags) in REPORT_METRICS.items():
        logged = {tag: scalars[tag] for tag in tags if scalars.get(tag)}
        if not logged:
            continue
        units = {tag: _step_unit(tag) for tag in logged}
        same_unit = len(set(units.values())) == 1
        by_step = {tag if same_unit else f"{tag} (x: {units[tag]})": [(step, value) for step, _, value in points]
                   for tag, points in logged.items()}
        xlabel = next(iter(units.values())) if same_unit else "step (see legend)"
        by_time = {tag: [((wall - start) / 60.0, value) for _, wall, value in points] for tag, points in logged.items()}
        title = f"{title} ({run})"
        written.append(plot_curves(by_step, out / f"{stem}_vs_steps.png", title, xlabel, ylabel, ylim))
        written.append(plot_curves(by_time, out / f"{stem}_vs_minutes.png", title, "wall-clock minutes", ylabel, ylim))
    return written


def _step_unit(tag: str) -> str:
    return next((unit for prefix, unit in STEP_UNITS.items() if tag.startswith(prefix)), "learner steps")


# ---------------------------------------------------------------- the online report

ONLINE_WINDOW = 5  # training episodes per rolling mean


def online_report(workdir: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """PNGs of an online run from its JSON-lines records (`agents/online_log.py`), with the true
    wall-clock time of every episode and evaluation: success rate, episode length and intervention
    rate, each against env steps (`online_<metric>_vs_env_steps.png`) and wall-clock minutes
    (`online_<metric>_vs_minutes.png`). Evaluations are drawn as they are; training episodes as a
    rolling mean over `ONLINE_WINDOW` episodes. Returns the paths written (none without records)."""
    run, out, written = Path(os.path.abspath(workdir)).name, Path(out_dir), []
    for stem, (title, ylabel, ylim, series) in online_curves(workdir).items():
        for axis, key, xlabel in (("env_steps", "env_steps_total", "env steps"),
                                  ("minutes", "elapsed_s", "wall-clock minutes")):
            scale = 60.0 if axis == "minutes" else 1.0
            lines = {label: [(row[key] / scale, value) for row, value in points]
                     for label, points in series.items() if points}
            written.append(plot_curves(lines, out / f"online_{stem}_vs_{axis}.png", f"{title} ({run})", xlabel,
                                       ylabel, ylim))
    return written


def online_curves(workdir: str | os.PathLike) -> dict[str, tuple]:
    """What `online_report` draws: {stem: (title, y label, y limits, {label: [(record row, value)]})}.
    Periodic evaluations, then the final one (`online_final_evaluation.json`), form one line."""
    from vlarft.agents.online_log import EPISODES_FILE, EVALUATIONS_FILE, read_final_evaluation, read_jsonl

    episodes = read_jsonl(Path(workdir) / EPISODES_FILE)
    final = read_final_evaluation(workdir)
    evaluations = read_jsonl(Path(workdir) / EVALUATIONS_FILE) + ([final] if final else [])
    if not episodes and not evaluations:
        return {}
    rolling = f"training episodes (mean of {ONLINE_WINDOW})"
    return {
        "success_rate": ("Success rate", "success rate", RATE_LIMITS,
                         {"evaluation (no human; last = final)": _column(evaluations, "success_rate"),
                          rolling: _rolling(_column(episodes, "success"))}),
        "episode_length": ("Episode length", "steps", None,
                           {"evaluation, successes": _column(evaluations, "mean_success_length"),
                            rolling: _rolling(_column(episodes, "length"))}),
        "intervention_rate": ("Intervention rate", "intervened steps / steps", RATE_LIMITS,
                              {rolling: _rolling([(row, row["intervention_steps"] / max(row["length"], 1))
                                                  for row in episodes])}),
    }


def _column(rows: Sequence[dict], field: str) -> list[tuple[dict, float]]:
    return [(row, float(row[field])) for row in rows if row.get(field) is not None]


def _rolling(points: Sequence[tuple[dict, float]], window: int = ONLINE_WINDOW) -> list[tuple[dict, float]]:
    values = [value for _, value in points]
    return [(row, sum(values[max(0, i + 1 - window):i + 1]) / min(window, i + 1)) for i, (row, _) in enumerate(points)]
