"""A trained policy exported for the next stage, evaluation or deployment.

`<workdir>/policy/` holds `backbone.msgpack`, `head.msgpack` and `policy.json` (config name,
cameras, dimensions, state normaliser, instruction, task, stage, learner step, and the SHA-256 of
both parameter files). Every stage writes it after training; the embedding job and later stages
read the backbone from it, so the cached embeddings and the acting policy always come from the
same backbone.

An export is written whole into `<workdir>/.incomplete-policy/` (`policy.json` last) and swapped
in as one directory (`datasets/directory_swap.py`): a crash never pairs a new backbone with an
old head, and the next export repairs an interrupted swap (a reader meanwhile finds the complete
one). Loading checks both files against the hashes in `policy.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from vlarft.agents.config import AgentConfig, config_from_json
from vlarft.agents.networks import load_backbone_params, save_backbone_params
from vlarft.agents.networks.common import load_tree, save_tree
from vlarft.agents.observation import StateNormalizer
from vlarft.datasets.directory_swap import incomplete_dir, readable_dir, recover_interrupted_swap, swap_into_place

EXPORT_DIR = "policy"
META_FILE = "policy.json"  # written last: the export is complete
PARAM_FILES = {"backbone": "backbone.msgpack", "head": "head.msgpack"}


class PolicyExportError(ValueError):
    """An export's files do not belong together (hash mismatch) or are damaged."""


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
    def backbone_sha256(self) -> str:
        """Fingerprint of the backbone parameters file (which backbone made an embedding)."""
        return self.meta["sha256"]["backbone"]

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
    """Writes the export as one unit (module docstring); `meta` must hold `config`
    (config_to_json), `cameras`, `state_dim`, `action_dim`, `normalizer` (JSON), `instruction`."""
    final = Path(workdir) / EXPORT_DIR
    recover_interrupted_swap(final, META_FILE)
    work = incomplete_dir(final)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_backbone_params(backbone_params, work / PARAM_FILES["backbone"])
    save_tree(head_params, work / PARAM_FILES["head"])
    hashes = {part: file_sha256(work / name) for part, name in PARAM_FILES.items()}
    (work / META_FILE).write_text(json.dumps({**meta, "sha256": hashes}, indent=1, sort_keys=True))
    swap_into_place(work, final, META_FILE)
    return final


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_dir(workdir: str | os.PathLike) -> Path:
    """The export directory of a workdir (or the export directory itself); FileNotFoundError if none."""
    given = Path(workdir)
    for candidate in (given, readable_dir(given / EXPORT_DIR, META_FILE), readable_dir(given, META_FILE)):
        if (candidate / META_FILE).exists():
            return candidate
    raise FileNotFoundError(f"{workdir}: no exported policy (expected {given / EXPORT_DIR / META_FILE}; "
                            f"train a stage with --workdir={workdir} first)")


def load_policy_export(workdir: str | os.PathLike) -> PolicyExport:
    """Reads `<workdir>/policy/` (or the export directory itself); PolicyExportError when its
    parameter files do not match the hashes its policy.json recorded."""
    directory = export_dir(workdir)
    meta = json.loads((directory / META_FILE).read_text())
    hashes = {part: file_sha256(directory / name) for part, name in PARAM_FILES.items()}
    for part, recorded in meta.get("sha256", {}).items():
        if hashes.get(part) != recorded:
            raise PolicyExportError(f"{directory / PARAM_FILES[part]} does not match the SHA-256 recorded in "
                                    f"{directory / META_FILE}: the export's files do not belong together; "
                                    f"re-run the stage that made it (it re-exports from its checkpoint)")
    meta["sha256"] = hashes  # an export written before hashes were recorded gets them here
    return PolicyExport(config=config_from_json(meta["config"]),
                        backbone_params=load_backbone_params(directory / PARAM_FILES["backbone"]),
                        head_params=load_tree(directory / PARAM_FILES["head"]), meta=meta)
