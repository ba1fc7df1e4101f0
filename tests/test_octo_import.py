"""Octo checkpoints imported without the `octo` package (agents/octo_import.py) reproduce Octo's
readout embeddings (fixture made by Octo's own code, tests/data/octo_tiny/README.md)."""

import dataclasses
import json
import os
import shutil

import flax
import jax.numpy as jnp
import numpy as np
import pytest

from vlarft.agents.networks.octo_backbone import OctoBackbone, octo_rule_mask, octo_token_groups
from vlarft.agents.octo_import import (OctoImportError, backbone_shapes, import_octo, load_import, released_config,
                                      save_import)

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "octo_tiny")


def example(version):
    return dict(np.load(os.path.join(FIXTURE, f"octo_{version}_example.npz")))


@pytest.mark.parametrize("version", ["1.5", "1.0"])
def test_readout_embeddings_equal_octo(version):
    result = import_octo(os.path.join(FIXTURE, f"octo_{version}"))
    cfg = result.config
    assert cfg.octo_repeat_task_tokens == cfg.octo_correct_attention == (version == "1.5")
    data = example(version)
    backbone = OctoBackbone(cfg, ("front", "hand"), 3)  # our camera names, sorted, feed primary, wrist
    images = {"front": data["image_primary"], "hand": data["image_wrist"]}
    readout = backbone.apply({"params": result.params}, images, jnp.zeros((2, 2, 3)),
                             timestep_mask=data["timestep_pad_mask"], language_embedding=data["language_embedding"],
                             all_frames=True)
    np.testing.assert_allclose(np.asarray(readout), data["readout"], atol=2e-5, rtol=1e-5)
    last = backbone.apply({"params": result.params}, images, jnp.zeros((2, 2, 3)),
                          timestep_mask=data["timestep_pad_mask"],
                          language_embedding=data["language_embedding"].reshape(2, -1))  # flattened works too
    np.testing.assert_allclose(np.asarray(last), data["readout"][:, -1], atol=2e-5, rtol=1e-5)
    # Octo's token groups and rules give Octo's mask (example 1 has no padding)
    prefix, frame = octo_token_groups(cfg.octo_cameras, (16, 4), 16, 1, cfg.octo_repeat_task_tokens)
    np.testing.assert_array_equal(octo_rule_mask(prefix, frame, 2, cfg.octo_correct_attention), data["token_mask"][1])


def test_summary_and_round_trip(tmp_path):
    result = import_octo(os.path.join(FIXTURE, "octo_1.5"))
    summary = result.summary()
    assert "180,984 parameters" in summary and f"{result.parameters:,} parameters" in summary
    assert "T5 language encoder" in summary and "action head" in summary
    assert result.parameters + sum(int(np.prod(s)) for _, s, _ in result.ignored) == result.octo_parameters
    save_import(result, tmp_path / "imported")
    config, params = load_import(tmp_path / "imported")
    assert config == result.config
    flat = flax.traverse_util.flatten_dict(params)
    for key, value in flax.traverse_util.flatten_dict(result.params).items():
        np.testing.assert_array_equal(np.asarray(flat[key]), value)


def tampered_copy(tmp_path, edit):
    root = tmp_path / "octo"
    shutil.copytree(os.path.join(FIXTURE, "octo_1.5"), root)
    path = root / "0" / "default" / "checkpoint"
    tree = flax.serialization.msgpack_restore(path.read_bytes())
    edit(tree["octo_transformer"])
    path.write_bytes(flax.serialization.msgpack_serialize(tree))
    return root


def test_refuses_mismatched_shape(tmp_path):
    def widen(octo):
        kernel = octo["obs_wrist_projection"]["kernel"]
        octo["obs_wrist_projection"]["kernel"] = np.zeros((kernel.shape[0] + 1, kernel.shape[1]), np.float32)

    with pytest.raises(OctoImportError, match=r"'octo_transformer/obs_wrist_projection/kernel' has shape \(65, 64\) "
                                              r"in the checkpoint, .*expects \(64, 64\)"):
        import_octo(tampered_copy(tmp_path, widen))


def test_refuses_unknown_key(tmp_path):
    def add(octo):
        octo["obs_proprio_tokenizer"] = {"kernel": np.zeros((3, 3), np.float32)}

    with pytest.raises(OctoImportError, match=r"unknown parameter 'octo_transformer/obs_proprio_tokenizer/kernel' "
                                              r"\(3, 3\)"):
        import_octo(tampered_copy(tmp_path, add))


def test_refuses_unknown_module(tmp_path):
    root = tmp_path / "octo"
    shutil.copytree(os.path.join(FIXTURE, "octo_1.5"), root)
    config = json.loads((root / "config.json").read_text())
    config["model"]["observation_tokenizers"]["wrist"]["kwargs"]["encoder"]["name"] = "ViTResnet"
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(OctoImportError, match="unsupported module octo.model.components.vit_encoders.ViTResnet"):
        import_octo(root)


@pytest.mark.parametrize("size, expected", [("small", 25_338_496), ("base", 91_028_224)])
def test_released_sizes(size, expected):
    """Octo-small/base without T5 and the action head (27,042,060 - 1,703,564 and 92,830,092 - 1,801,868
    parameters in the released checkpoints): the tree shapes only, nothing computed."""
    assert sum(int(np.prod(s)) for s in backbone_shapes(released_config(size)).values()) == expected


def test_sft_from_imported_octo_weights(tmp_path):
    """A few SFT steps from the imported weights on episodes whose `language_embedding` is the
    instruction's T5 states (flattened 16 x 32, from the fixture), 32 / 16 px frames resized to the
    Octo cameras' 64 / 32 px: the run's backbone is Octo's, moved a little from the imported
    weights; the exported policy acts, the embedding job caches its readouts and the offline stage
    exports a policy with that backbone."""
    import jax

    from vlarft.agents import training
    from vlarft.agents.config import get_config, loss_preset
    from vlarft.agents.export import load_policy_export
    from vlarft.datasets.episode_builder import EpisodeBuilder
    from vlarft.datasets.raw_episodes import write_raw_episode
    from vlarft.datasets.schema import EpisodeSpec
    from vlarft.pipelines.convert_demos import convert
    from vlarft.pipelines.embed_dataset import embed_dataset

    save_import(import_octo(os.path.join(FIXTURE, "octo_1.5")), tmp_path / "imported")
    language = example("1.5")["language_embedding"][1].reshape(-1)
    spec = EpisodeSpec(cameras={"front": (32, 32), "wrist": (16, 16)}, language_embedding_dim=language.size)
    rng = np.random.default_rng(0)
    (tmp_path / "raw").mkdir()
    obs = lambda: {"image_front": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                   "image_wrist": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                   "state": rng.normal(size=19).astype(np.float32)}
    for i in range(3):
        builder = EpisodeBuilder(spec, episode_id=f"o{i}", task="pick_cube", instruction="pick up the red cube",
                                 robot="lab_arm", language_embedding=language)
        builder.start(obs())
        for _ in range(4):
            builder.add(rng.uniform(-1, 1, 7), 0.0, obs(), terminated=False)
        write_raw_episode(tmp_path / "raw" / f"o{i}.npz", builder.finish(success=False), spec)
    dataset = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "octo", validation_fraction=0.0,
                      log=lambda msg: None)
    config = get_config("tiny")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=4, log_every=1,
                                                                   eval_every=0, checkpoint_every=100))
    options = training.StageOptions(dataset_dir=dataset.dataset_dir, workdir=str(tmp_path / "sft"), steps=3,
                                    eval_episodes=0, backbone_from=str(tmp_path / "imported"), show_progress=False)
    training.run_sft(options, config)
    trained = load_policy_export(tmp_path / "sft")
    assert trained.config.backbone.architecture == "octo" and trained.config.backbone.octo_image_sizes == (64, 32)
    _, imported = load_import(tmp_path / "imported")
    moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                                   imported, trained.backbone_params)
    assert 0 < max(jax.tree_util.tree_leaves(moved)) < 0.05  # three small Adam steps from the imported weights
    assert np.allclose(trained.meta["language_embedding"], language)

    policy = trained.policy()  # acts on the whole window each step
    for _ in range(2):
        action = policy.act(obs())
        assert action.shape == (7,) and np.all(np.isfinite(action)) and policy.last_embedding.shape == (64,)
    embedded = embed_dataset(dataset.dataset_dir, str(tmp_path / "sft"), str(tmp_path / "data"), log=lambda m: None)
    assert embedded.spec.embedding_dim == 64
    offline = training.StageOptions(dataset_dir=embedded.dataset_dir, workdir=str(tmp_path / "offline"), steps=2,
                                    eval_episodes=0, show_progress=False)
    training.run_offline(offline, config, loss_preset("stable", "offline"))  # the tiny preset's backbone section
    assert load_policy_export(tmp_path / "offline").config.backbone == trained.config.backbone  # is the policy's

    wrong = dataclasses.replace(options, workdir=str(tmp_path / "wrong"))
    backbone = json.loads((tmp_path / "imported" / "backbone_config.json").read_text())
    (tmp_path / "imported" / "backbone_config.json").write_text(json.dumps({**backbone, "octo_task_tokens": 8}))
    with pytest.raises(ValueError, match=r"language_embedding has 512 values, the Octo backbone .* 8 x 32 = 256"):
        training.run_sft(wrong, config)


def test_cli_prints_summary_and_refuses(tmp_path, capsys):
    from vlarft.tools.import_octo import main

    assert main([os.path.join(FIXTURE, "octo_1.0"), f"--out={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "backbone: 155,712 parameters" in out and "-> block1/mlp2/kernel (128, 64)" in out
    assert (tmp_path / "out" / "backbone.msgpack").exists() and (tmp_path / "out" / "octo_dataset_statistics.json").exists()

    def narrow(octo):
        octo["BlockTransformer_0"]["Transformer_0"]["encoderblock_1"]["MlpBlock_0"]["Dense_1"]["bias"] = np.zeros(63)

    assert main([str(tampered_copy(tmp_path, narrow)), f"--out={tmp_path / 'bad'}"]) == 2
    assert ("parameter 'octo_transformer/BlockTransformer_0/Transformer_0/encoderblock_1/MlpBlock_0/Dense_1/bias' "
            "has shape (63,) in the checkpoint, the backbone's 'block1/mlp2/bias' expects (64,)") in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
