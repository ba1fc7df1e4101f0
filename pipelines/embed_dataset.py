"""Beam job: cache the frozen backbone's readout embedding of every step of an RLDS dataset.

    python pipelines/embed_dataset.py --dataset_dir=DATA/sim_pick_cube/1.0.0 --policy_from=SFT_WORKDIR \\
        --output_dir=DATA [--dataset=sim_pick_cube_emb] [--batch_size=64] [--overwrite] [Beam options]

Each shard of the source dataset is one work item: its episodes are decoded, every step's
W-frame window goes through the backbone in batches, and the episode is written again with a
`steps/embedding` field (float32[width]) through the same runner-agnostic writer as the demo
conversion. Splits are kept exactly as in the source. The new dataset's `embedding.json` names
the policy export whose backbone made the embeddings and that backbone file's SHA-256, so offline
and online training act with that same backbone (a different one is refused). The last line of standard output is the new dataset directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vlarft.datasets.reader import dataset_spec, iterate_episodes, open_dataset
from vlarft.datasets.schema import Episode, validate_episode
from vlarft.pipelines.rlds_job import ConversionError, JobResult, report, run_rlds_job
from vlarft.pipelines.sources import DeadLetter

EMBEDDING_INFO = "embedding.json"


class EmbeddingReader:
    """`"<split>[<i>shard]"` -> that shard's episodes with embeddings (model loaded once per worker)."""

    def __init__(self, source_dir: str, policy_dir: str, batch_size: int):
        self.source_dir, self.policy_dir, self.batch_size = source_dir, policy_dir, batch_size
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def _load(self):
        import jax

        from vlarft.agents.export import load_policy_export
        from vlarft.agents.networks import make_backbone, tokenize

        export = load_policy_export(self.policy_dir)
        backbone = make_backbone(export.config.backbone, export.cameras, export.meta["state_dim"])
        apply = jax.jit(lambda p, images, state, ids, mask, tmask, language: backbone.apply(
            {"params": p}, images, state, ids, mask, tmask, language_embedding=language))
        spec = dataclasses.replace(dataset_spec(self.source_dir), embedding_dim=export.config.backbone.width)
        self._model = (export, apply, spec, tokenize)

    def __call__(self, shard: str) -> Iterator[Episode | DeadLetter]:
        if self._model is None:
            self._load()
        export, apply, spec, tokenize = self._model
        for episode in iterate_episodes(self.source_dir, shard):
            try:
                yield validate_episode(self._with_embedding(episode, export, apply, tokenize), spec)
            except ValueError as e:
                yield DeadLetter(file=f"{self.source_dir}:{shard}", reason=str(e),
                                 episode_id=episode["episode_metadata"]["episode_id"])

    def _with_embedding(self, episode: Episode, export, apply, tokenize) -> Episode:
        from vlarft.agents.observation import episode_windows

        cfg = export.config.backbone
        obs = dict(episode["steps"]["observation"])
        obs["state"] = export.normalizer(obs["state"]).astype(np.float32)
        windows, mask = episode_windows(obs, cfg.window)
        ids, text_mask = tokenize(list(episode["steps"]["language_instruction"]), cfg.max_text_tokens, cfg.vocab_size)
        language = episode["steps"].get("language_embedding") if cfg.language_embedding_dim else None
        chunks = []
        for start in range(0, len(mask), self.batch_size):
            part = slice(start, start + self.batch_size)
            images = {cam: windows[f"image_{cam}"][part] for cam in export.cameras}
            chunks.append(np.asarray(apply(export.backbone_params, images, windows["state"][part], ids[part],
                                           text_mask[part], mask[part], None if language is None else language[part])))
        steps = dict(episode["steps"], embedding=np.concatenate(chunks).astype(np.float32))
        return {"steps": steps, "episode_metadata": episode["episode_metadata"]}


def embed_dataset(dataset_dir: str, policy_dir: str, output_dir: str, dataset: str = "", *, batch_size: int = 64,
                  overwrite: bool = False, pipeline_args: Sequence[str] = (), log=print,
                  progress: bool = False) -> JobResult:
    """Writes `output_dir/<dataset>/<version>`: the source dataset plus cached embeddings (an
    existing one is replaced only when `overwrite`; `progress` draws a bar of episodes embedded)."""
    from vlarft.agents.export import load_policy_export

    source = Path(dataset_dir).absolute()
    info = open_dataset(source).info
    export = load_policy_export(policy_dir)
    spec = dataclasses.replace(dataset_spec(source), embedding_dim=export.config.backbone.width)
    shards = [f"{split}[{i}shard]" for split, split_info in info.splits.items() for i in range(split_info.num_shards)]
    plan = json.loads((source / "plan.json").read_text()) if (source / "plan.json").exists() else {}
    splits = plan.get("splits") or {ep["episode_metadata"]["episode_id"]: split for split in info.splits
                                     for ep in iterate_episodes(source, split)}
    result = run_rlds_job(
        shards, EmbeddingReader(str(source), str(Path(policy_dir).absolute()), batch_size), spec, output_dir,
        dataset or f"{info.name}_emb", version=str(info.version), num_buckets=max(1, len(shards) // 2),
        fixed_splits=splits, pipeline_args=pipeline_args, log=log, verb="Embedding", overwrite=overwrite,
        progress=progress, expected_episodes=len(splits),
        report={"source_dataset": str(source), "policy_from": str(Path(policy_dir).absolute())},
        extra_files={EMBEDDING_INFO: {"source_dataset": str(source), "policy_from": str(Path(policy_dir).absolute()),
                                      "embedding_dim": spec.embedding_dim, "backbone_sha256": export.backbone_sha256}})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", required=True, help="source RLDS dataset directory")
    parser.add_argument("--policy_from", required=True, help="workdir (or its policy/ export) of the SFT stage")
    parser.add_argument("--output_dir", required=True, help="TFDS data directory for the new dataset")
    parser.add_argument("--dataset", default="", help="new dataset name (default <source>_emb)")
    parser.add_argument("--batch_size", type=int, default=64, help="windows per backbone call")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing embedded dataset (kept until the new one is complete)")
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    try:
        result = embed_dataset(args.dataset_dir, args.policy_from, args.output_dir, args.dataset,
                               batch_size=args.batch_size, overwrite=args.overwrite, pipeline_args=beam_args, log=log)
    except (ConversionError, OSError, ValueError) as e:
        log(f"error: {e}")
        return 1
    report(result, "Embedded", log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
