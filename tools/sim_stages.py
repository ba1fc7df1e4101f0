"""One simulated task through every stage, resumably: record -> convert -> SFT -> embed -> offline
Cal-ConRFT -> online HIL-ConRFT, each stage's policy evaluated on fixed evaluation seeds.

Shared by the main job (`run_sim_pipeline.py`) and the ConRFT benchmark (`benchmark_conrft.py`).
A `TaskPipeline` owns one folder:

    <root>/demos/               raw demonstrations (scripted operator, seeded)
    <root>/data/                the RLDS dataset and its embedded copy
    <root>/sft/                 SFT workdir (+ result.json once finished)
    <root>/offline/<name>/      a Cal-ConRFT variant on the SFT embeddings
    <root>/online/<offline name>/<name>/   a HIL-ConRFT variant started from that offline run
    <root>/online_agents/<name>/           another online method (HG-DAgger, RLPD) from the SFT run

A stage whose `result.json` exists is not run again (a killed run resumes at the stage it was
in, and training inside a stage resumes from its checkpoints), so variants of a later stage
share the earlier stages' runs. Agent settings of a stage are `SECTION.FIELD=VALUE` overrides
(`agents/config.py: with_overrides`); loss weights start from the stage's `paper` preset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from vlarft.agents import training
from vlarft.agents.config import AgentConfig, get_config, loss_preset, override_section, with_overrides
from vlarft.agents.online import run_online
from vlarft.pipelines.convert_demos import convert
from vlarft.pipelines.embed_dataset import embed_dataset
from vlarft.tools.record_demos import record

RESULT_FILE = "result.json"

# What the CPU default changes online (measured with the tiny model, see WORKSPACE.md).
CPU_ONLINE_OVERRIDES = ("train.learning_rate=1e-4",)


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """Sizes of one task's pipeline (CPU default; `full()` for the paper-scale run).

    Attributes:
      episodes: demonstrations recorded with the scripted operator.
      image_size: camera images (square, pixels).
      config: model preset (`tiny` | `small`).
      batch_size: learner batch (every stage).
      sft_steps, offline_steps: learner steps of SFT and of the offline stage.
      eval_episodes: evaluation episodes per stage's final policy (fixed seeds 10000, 10001, ...).
      online_env_steps: robot steps of the online stage.
      online_eval_every, online_eval_episodes: the online stage's periodic evaluations.
      seed: demos, training and online seeds derive from it.
      loss_preset: the stages' loss weights (`agents/config.py: loss_preset`; `stable` measured best).
      overrides: agent config overrides for every stage.
      offline_overrides, online_overrides: more overrides for one stage (after `overrides`).
      backbone_from: SFT starts from this imported Octo backbone (`tools/import_octo.py --out`
        directory); its architecture replaces the preset's backbone in every stage.
    """

    episodes: int = 20
    image_size: int = 64
    config: str = "tiny"
    batch_size: int = 64
    sft_steps: int = 1500
    offline_steps: int = 1500
    eval_episodes: int = 20
    online_env_steps: int = 6000
    online_eval_every: int = 1000
    online_eval_episodes: int = 5
    seed: int = 0
    loss_preset: str = "stable"
    overrides: tuple[str, ...] = ()
    offline_overrides: tuple[str, ...] = ()
    online_overrides: tuple[str, ...] = CPU_ONLINE_OVERRIDES
    backbone_from: str = ""

    @classmethod
    def full(cls, **overrides) -> "PipelineSettings":
        """Paper-scale settings (Octo-small widths, 128 px, batch 256, 20k steps; for a GPU)."""
        return cls(**{**dict(episodes=30, image_size=128, config="small", batch_size=256, sft_steps=20000,
                             offline_steps=20000, online_env_steps=20000, online_eval_every=2000,
                             online_eval_episodes=10, online_overrides=()), **overrides})


class TaskPipeline:
    """Runs (or resumes) one simulated task's stages under `root`; `log` prints progress lines."""

    def __init__(self, task: str, root: str | Path, settings: PipelineSettings, beam_args: Sequence[str] = (),
                 log: Callable[[str], None] = print, show_progress: bool = True, verbose: bool = False):
        self.task, self.root, self.settings = task, Path(root), settings
        self.beam_args, self.log, self.show_progress, self.verbose = list(beam_args), log, show_progress, verbose

    # -------------------------------------------------------------- stages

    def demos(self) -> dict:
        """Records the demonstrations and converts them to RLDS."""
        s = self.settings
        return self._cached(self.root / "data" / "demos", self._record_and_convert,
                            "demonstrations", f"{s.episodes} by the scripted operator, converted to RLDS")

    def sft(self) -> dict:
        dataset = self.demos()["dataset_dir"]
        options = dataclasses.replace(self._options(dataset, self.root / "sft", self.settings.sft_steps),
                                      backbone_from=self.settings.backbone_from)
        return self._cached(self.root / "sft", lambda: training.run_sft(options, self._config("sft")),
                            "SFT", f"{self.settings.sft_steps} steps")

    def embedded(self) -> str:
        """The SFT backbone's cached-embedding dataset directory."""
        dataset = self.demos()["dataset_dir"]
        self.sft()

        def embed() -> dict:
            result = embed_dataset(dataset, str(self.root / "sft"), str(self.root / "data"), log=self._detail,
                                   overwrite=True, pipeline_args=self.beam_args, progress=self.show_progress)
            return {"dataset_dir": result.dataset_dir}

        return self._cached(self.root / "data" / "embedded", embed, "embeddings",
                            "the SFT backbone over the dataset")["dataset_dir"]

    def offline(self, name: str = "default") -> dict:
        workdir = self.root / "offline" / name
        dataset = self.embedded()

        def run() -> dict:
            config = self._config("offline")
            loss = self._loss(config, "offline", self.settings.offline_overrides)
            return training.run_offline(self._options(dataset, workdir, self.settings.offline_steps), config, loss)

        return self._cached(workdir, run, f"offline Cal-ConRFT '{name}'", f"{self.settings.offline_steps} steps")

    def online(self, offline_name: str = "default", name: str = "default") -> dict:
        workdir = self.root / "online" / offline_name / name
        self.offline(offline_name)

        def run() -> dict:
            s = self.settings
            config = self._config("online")
            config = dataclasses.replace(config, online=dataclasses.replace(
                config.online, env_steps=s.online_env_steps, teleop="scripted_intervention",
                eval_every=s.online_eval_every, eval_episodes=s.online_eval_episodes))
            loss = self._loss(config, "online", s.online_overrides)
            options = dataclasses.replace(self._options("", workdir, 0),
                                          init_from=str(self.root / "offline" / offline_name))
            return run_online(options, config, loss)

        return self._cached(workdir, run, f"online HIL-ConRFT '{name}'",
                            f"{self.settings.online_env_steps} env steps, scripted interventions")

    def baseline(self, agent: str, name: str, overrides: Sequence[str] = ()) -> dict:
        """Another online method (`agents/registry.py`, e.g. hg_dagger, rlpd) from this task's SFT
        run and embedded dataset, with the online stage's settings (budget, intervener,
        evaluations) and `overrides` after them; under <root>/online_agents/<name>."""
        workdir = self.root / "online_agents" / name
        dataset = self.embedded()

        def run() -> dict:
            s = self.settings
            config = with_overrides(self._config("online"), tuple(overrides))
            config = dataclasses.replace(config, online=dataclasses.replace(
                config.online, agent=agent, env_steps=s.online_env_steps, teleop="scripted_intervention",
                eval_every=s.online_eval_every, eval_episodes=s.online_eval_episodes))
            loss = self._loss(config, "online", tuple(s.online_overrides) + tuple(overrides))
            options = dataclasses.replace(self._options(dataset, workdir, 0), init_from=str(self.root / "sft"))
            return run_online(options, config, loss)

        return self._cached(workdir, run, f"online {agent} '{name}'",
                            f"{self.settings.online_env_steps} env steps, scripted interventions")

    def all_stages(self, offline_name: str = "default", online_name: str = "default") -> dict:
        """Every stage's result: {"demos", "sft", "cal_conrft", "hil_conrft"}."""
        return {"demos": self.demos(), "sft": self.sft(), "cal_conrft": self.offline(offline_name),
                "hil_conrft": self.online(offline_name, online_name)}

    # -------------------------------------------------------------- plumbing

    def _record_and_convert(self) -> dict:
        s = self.settings
        demo_dir = self.root / "demos"
        shutil.rmtree(demo_dir, ignore_errors=True)  # an interrupted recording: start it over
        recorded = record(f"sim:{self.task}", "scripted", s.episodes, str(demo_dir), seed=s.seed,
                          image_size=s.image_size, progress=self.show_progress).as_dict()
        result = convert([str(demo_dir)], str(self.root / "data"), f"sim_{self.task}", log=self._detail,
                         overwrite=True, pipeline_args=self.beam_args, progress=self.show_progress)
        return {"dataset_dir": result.dataset_dir, "demos": sum(result.episodes.values()),
                "operator_success_rate": recorded["success_rate"], "mean_demo_length": recorded["mean_length"]}

    def _config(self, stage: str) -> AgentConfig:
        s = self.settings
        base = get_config(s.config)
        config = dataclasses.replace(base, train=dataclasses.replace(
            base.train, batch_size=s.batch_size, eval_every=0, checkpoint_every=500, seed=s.seed))
        stage_overrides = {"offline": s.offline_overrides, "online": s.online_overrides}.get(stage, ())
        return with_overrides(config, tuple(s.overrides) + tuple(stage_overrides))

    def _loss(self, config: AgentConfig, stage: str, stage_overrides):
        """The stage's weights of the settings' loss preset, then the `loss.*` overrides."""
        overrides = tuple(self.settings.overrides) + tuple(stage_overrides)
        return override_section(loss_preset(self.settings.loss_preset, stage), "loss", overrides)

    def _options(self, dataset: str, workdir: Path, steps: int) -> training.StageOptions:
        return training.StageOptions(dataset_dir=dataset, workdir=str(workdir), steps=steps,
                                     eval_episodes=self.settings.eval_episodes, show_progress=self.show_progress)

    def _cached(self, directory: Path, run: Callable[[], dict], name: str, detail: str) -> dict:
        """The stage's stored result, or runs it between a start line and a result line."""
        path = directory / RESULT_FILE
        if path.exists():
            return json.loads(path.read_text())
        self.log(f"{self.task}: {name} ({detail}) ...")
        start = time.time()
        result = {**run(), "stage_wall_s": time.time() - start}
        self.log(f"{self.task}: {name} done: {result_line(result)}")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(jsonable(result), indent=1))
        tmp.replace(path)
        return json.loads(path.read_text())

    def _detail(self, message: str) -> None:
        """A Beam job's own lines: shown with `verbose`, errors always."""
        if self.verbose or message.startswith("error"):
            self.log(f"  {message}")


def result_line(result: dict) -> str:
    """One stage's result in a line: what it made, its evaluation, its wall time."""
    parts = []
    if "demos" in result:
        parts.append(f"{result['demos']} demos (operator success {result['operator_success_rate']:.0%}, mean length "
                     f"{result['mean_demo_length']:.1f})")
    if "success_rate" in result:
        parts.append(f"success {result['success_rate']:.0%}, mean episode length "
                     f"{result.get('mean_episode_length', float('nan')):.1f}")
    if "intervention_rate" in result:
        parts.append(f"interventions {result['intervention_rate']:.0%} of steps")
    if "dataset_dir" in result and "demos" not in result:
        parts.append(str(result["dataset_dir"]))
    parts.append(f"{result['stage_wall_s'] / 60:.1f} min")
    return "; ".join(parts)


def jsonable(value):
    """`value` with non-finite floats as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


OVERRIDE_FLAGS = {"overrides": "set", "offline_overrides": "offline_set", "online_overrides": "online_set"}


def add_settings_arguments(parser, defaults: PipelineSettings = PipelineSettings()) -> None:
    """One flag per `PipelineSettings` field (`--set`/`--offline_set`/`--online_set` for the
    overrides, repeatable), plus `--full` for the paper-scale settings."""
    parser.add_argument("--full", action="store_true", help="paper-scale settings (for a GPU)")
    for field in dataclasses.fields(PipelineSettings):
        default = getattr(defaults, field.name)
        if field.name in OVERRIDE_FLAGS:
            parser.add_argument(f"--{OVERRIDE_FLAGS[field.name]}", dest=field.name, action="append", default=None,
                                metavar="SECTION.FIELD=VALUE",
                                help=f"agent config override, repeatable (default {' '.join(default) or 'none'})")
        else:
            parser.add_argument(f"--{field.name}", type=type(default), default=None, help=f"default {default}")


def settings_from_args(args, defaults: PipelineSettings = PipelineSettings()) -> PipelineSettings:
    """The settings the flags of `add_settings_arguments` ask for. A stage's overrides given on
    the command line come after its default ones."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PipelineSettings)
             if getattr(args, f.name) is not None}
    base = PipelineSettings.full() if args.full else defaults
    for name in OVERRIDE_FLAGS:
        if name in given:
            given[name] = tuple(getattr(base, name)) + tuple(given[name])
    return dataclasses.replace(base, **given)
