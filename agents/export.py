"""A trained policy exported for the next stage, evaluation or deployment.

`<workdir>/policy/` holds `backbone.msgpack`, `head.msgpack` and `policy.json` (config name,
cameras, dimensions, state normaliser, instruction, task, stage, learner step). Every stage
writes it after training; the embedding job and later stages read the backbone from it, so the
cached embeddings and the acting policy always come from the same backbone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from vlarft.agents.config import AgentConfig, config_from_json
from vlarft.agents.networks import load_backbone_params, save_backbone_params
from vlarft.agents.networks.common import load_tree, save_tree
from vlarft.agents.observation import StateNormalizer

EXPORT_DIR = "policy"


@dataclasses.dataclass
class PolicyExport:
    config: AgentConfig
    backbone_params: Any
    head_params: Any
    meta: dict

    @property
    def normalizer(self) -> StateNormalizer:
        return StateNormalizer.from_json(self.meta["normalizer"])

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.meta["cameras"])

    def policy(self, deterministic: bool = True, steps: int = 1, seed: int = 0):
        from vlarft.agents.actor import ConRFTPolicy

        return ConRFTPolicy(self.config, self.backbone_params, self.head_params, cameras=self.cameras,
                            state_dim=self.meta["state_dim"], action_dim=self.meta["action_dim"],
                            normalizer=self.normalizer, instruction=self.meta["instruction"],
                            deterministic=deterministic, steps=steps, seed=seed,
                            language_embedding=self.meta.get("language_embedding"))


def export_policy(workdir: str | os.PathLike, backbone_params, head_params, meta: dict) -> Path:
    """Writes the export (atomically per file); `meta` must hold `config` (config_to_json),
    `cameras`, `state_dim`, `action_dim`, `normalizer` (JSON), `instruction`."""
    directory = Path(workdir) / EXPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    save_backbone_params(backbone_params, directory / "backbone.msgpack")
    save_tree(head_params, directory / "head.msgpack")
    tmp = directory / ".policy.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, directory / "policy.json")
    return directory


def load_policy_export(workdir: str | os.PathLike) -> PolicyExport:
    """Reads `<workdir>/policy/` (or the export directory itself)."""
    directory = Path(workdir)
    if not (directory / "policy.json").exists():
        directory = directory / EXPORT_DIR
    if not (directory / "policy.json").exists():
        raise FileNotFoundError(f"{workdir}: no exported policy (expected {directory / 'policy.json'}; "
                                f"train a stage with --workdir={workdir} first)")
    meta = json.loads((directory / "policy.json").read_text())
    return PolicyExport(config=config_from_json(meta["config"]), backbone_params=load_backbone_params(directory / "backbone.msgpack"),
                        head_params=load_tree(directory / "head.msgpack"), meta=meta)
