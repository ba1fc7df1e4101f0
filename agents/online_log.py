"""What the online stage records about the robot: per-episode figures and periodic evaluations.

The actor thread reports each finished training episode (`EpisodeStats`) and each periodic
evaluation (`EvalPoint`) into an `OnlineRecord`; the thread that owns the TensorBoard writer
calls `drain(log)` now and then, which writes the new entries as TensorBoard scalars at their env
step (`online/...`, `online_eval/...`) and appends them to `online_episodes.jsonl` /
`online_evaluations.jsonl` in the workdir (one JSON object per line, flushed at once, so a crash
keeps everything drained before it). The stage's final evaluation (after the last update) is
`online_final_evaluation.json`, an `EvalPoint` too, so reports draw it after the periodic ones. A resumed run first cuts a line a crash left half written
(everything after the last newline), then continues the files and its env-step and wall-clock
axes where the previous run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from pathlib import Path

import numpy as np

EPISODES_FILE = "online_episodes.jsonl"
EVALUATIONS_FILE = "online_evaluations.jsonl"
FINAL_EVALUATION_FILE = "online_final_evaluation.json"


@dataclasses.dataclass
class EpisodeStats:
    """One online training episode (the human may have intervened)."""

    index: int
    length: int
    success: bool
    intervention_steps: int
    intervention_segments: int
    policy_version: int
    env_steps_total: int
    elapsed_s: float  # wall-clock seconds since the online stage began (across resumes)

    @property
    def intervention_rate(self) -> float:
        return self.intervention_steps / max(self.length, 1)

    def scalars(self) -> dict:
        return {"success": float(self.success), "length": self.length, "intervention_rate": self.intervention_rate,
                "intervention_count": self.intervention_segments, "intervention_steps": self.intervention_steps,
                "policy_version": self.policy_version}


@dataclasses.dataclass
class EvalPoint:
    """A periodic evaluation: deterministic policy, no interventions, fixed seeds."""

    env_steps_total: int
    elapsed_s: float
    policy_version: int
    episodes: int
    success_rate: float
    mean_success_length: float
    mean_episode_length: float
    video: str = ""

    def scalars(self) -> dict:
        values = {"success_rate": self.success_rate, "mean_episode_length": self.mean_episode_length,
                  "mean_success_length": self.mean_success_length, "policy_version": self.policy_version}
        return {k: v for k, v in values.items() if math.isfinite(v)}


class OnlineRecord:
    """Thread-safe lists of episodes and evaluations, mirrored to TensorBoard and JSON lines."""

    def __init__(self, workdir: str):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.episodes: list[EpisodeStats] = []
        self.evaluations: list[EvalPoint] = []
        self._lock = threading.Lock()
        self._drained = {EpisodeStats: 0, EvalPoint: 0}
        for name in (EPISODES_FILE, EVALUATIONS_FILE):
            cut_torn_tail(self.dir / name)
        previous = read_jsonl(self.dir / EPISODES_FILE) + read_jsonl(self.dir / EVALUATIONS_FILE)
        self.elapsed_before = max((row["elapsed_s"] for row in previous), default=0.0)
        self.episodes_before = len(read_jsonl(self.dir / EPISODES_FILE))
        self._start = time.monotonic()

    def elapsed(self) -> float:
        """Wall-clock seconds of the online stage, including the runs this one resumes."""
        return self.elapsed_before + time.monotonic() - self._start

    def add_episode(self, stats: EpisodeStats) -> None:
        with self._lock:
            self.episodes.append(stats)

    def add_evaluation(self, point: EvalPoint) -> None:
        with self._lock:
            self.evaluations.append(point)

    def drain(self, log=None) -> None:
        """Writes entries not yet written to the JSON-lines files and (when given) TensorBoard."""
        for kind, items, file, prefix in ((EpisodeStats, self.episodes, EPISODES_FILE, "online/"),
                                          (EvalPoint, self.evaluations, EVALUATIONS_FILE, "online_eval/")):
            with self._lock:
                new = items[self._drained[kind]:]
                self._drained[kind] += len(new)
            if not new:
                continue
            with open(self.dir / file, "a") as out:
                for item in new:
                    out.write(json.dumps(_finite(dataclasses.asdict(item))) + "\n")
            if log is not None:
                for item in new:
                    log.scalars(item.env_steps_total, item.scalars(), prefix=prefix)

    def write_final_evaluation(self, evaluation: dict, policy_version: int, env_steps_total: int) -> EvalPoint:
        """Writes the stage's final evaluation (`robot_evaluation`'s figures) as an `EvalPoint` at
        `env_steps_total` and now; returns it."""
        point = EvalPoint(env_steps_total=env_steps_total, elapsed_s=self.elapsed(), policy_version=policy_version,
                          episodes=int(evaluation.get("episodes", 0)),
                          success_rate=float(evaluation.get("success_rate", float("nan"))),
                          mean_success_length=float(evaluation.get("mean_success_length", float("nan"))),
                          mean_episode_length=float(evaluation.get("mean_episode_length", float("nan"))),
                          video=str(evaluation.get("video", "")))
        path = self.dir / FINAL_EVALUATION_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_finite(dataclasses.asdict(point))))
        tmp.replace(path)
        return point

    def env_steps_total(self) -> int:
        """Env steps of the online stage so far, across resumes (from the episode records)."""
        rows = read_jsonl(self.dir / EPISODES_FILE)
        return max([row["env_steps_total"] for row in rows] + [e.env_steps_total for e in self.episodes], default=0)

    def summary(self) -> dict:
        """Totals over this run's online episodes, and the newest evaluation's figures."""
        episodes = list(self.episodes)
        steps = sum(e.length for e in episodes)
        summary = {
            "online_episodes": len(episodes),
            "online_success_rate": float(np.mean([e.success for e in episodes])) if episodes else float("nan"),
            "intervention_rate": sum(e.intervention_steps for e in episodes) / steps if steps else 0.0,
            "interventions": sum(e.intervention_segments for e in episodes),
            "env_steps": steps,
        }
        summary["evaluations"] = [{"env_steps": p.env_steps_total, "minutes": p.elapsed_s / 60,
                                   "success_rate": p.success_rate, "mean_success_length": p.mean_success_length}
                                  for p in self.evaluations]
        return summary


def read_final_evaluation(workdir) -> dict | None:
    """The final evaluation record of an online run, or None (not finished yet)."""
    path = Path(workdir) / FINAL_EVALUATION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def cut_torn_tail(path: Path) -> None:
    """Truncates a JSON-lines file to its last newline: a line a crash left half written would
    otherwise swallow the next row appended to it."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file (a torn last line, from a crash mid-write, is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _finite(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
