"""The RLDS schema: validation errors name episode/step/field; the builder's flags and discounts."""

import json

import numpy as np
import pytest

from conftest import SMALL_SPEC, make_episode
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.schema import EpisodeSpec, SchemaError, flatten, tfds_features, unflatten, validate_episode


def test_terminal_end_flags_and_discounts():
    ep = make_episode(length=3, terminal=True)
    steps = ep["steps"]
    assert steps["is_first"].tolist() == [True, False, False, False]
    assert steps["is_last"].tolist() == [False, False, False, True]
    assert steps["is_terminal"].tolist() == [False, False, False, True]
    assert steps["discount"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert steps["reward"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert steps["action"][-1].tolist() == [0.0] * 7  # RLDS padding on the final observation
    assert steps["policy_version"].tolist() == [-1] * 4
    assert ep["episode_metadata"]["success"] is True


def test_time_limit_end_bootstraps():
    steps = make_episode(length=3, terminal=False)["steps"]
    assert steps["is_last"].tolist() == [False, False, False, True]
    assert not steps["is_terminal"].any()
    assert steps["discount"].tolist() == [1.0] * 4


def test_validate_casts_losslessly():
    ep = make_episode()
    ep["steps"]["action"] = ep["steps"]["action"].astype(np.float64)
    ep["steps"]["intervention"] = ep["steps"]["intervention"].astype(np.int64)
    out = validate_episode(ep, SMALL_SPEC)
    assert out["steps"]["action"].dtype == np.float32
    assert out["steps"]["intervention"].dtype == np.bool_


@pytest.mark.parametrize("mutate, step, field", [
    (lambda s: s.pop("reward"), None, "reward"),
    (lambda s: s.__setitem__("action", s["action"][:, :6]), 0, "action"),
    (lambda s: s["observation"]["state"].__setitem__((3, 2), np.nan), 3, "observation/state"),
    (lambda s: s["action"].__setitem__((2, 0), 1.5), 2, "action"),
    (lambda s: s["is_terminal"].__setitem__(1, True), 1, "is_terminal"),
    (lambda s: s["is_first"].__setitem__(2, True), 2, "is_first"),
    (lambda s: s["language_instruction"].__setitem__(4, ""), 4, "language_instruction"),
    (lambda s: s["observation"].__setitem__("image_front", s["observation"]["image_front"].astype(np.float32)),
     None, "observation/image_front"),
])
def test_errors_name_episode_step_and_field(mutate, step, field):
    ep = make_episode(episode_id="bad-one", length=5)
    mutate(ep["steps"])
    with pytest.raises(SchemaError) as err:
        validate_episode(ep, SMALL_SPEC)
    assert err.value.episode_id == "bad-one"
    assert err.value.field == field
    assert err.value.step == step
    assert "bad-one" in str(err.value) and field in str(err.value)


def test_metadata_errors():
    ep = make_episode(episode_id="m")
    del ep["episode_metadata"]["task"]
    with pytest.raises(SchemaError, match="episode_metadata/task"):
        validate_episode(ep, SMALL_SPEC)
    ep = make_episode(episode_id="m")
    ep["episode_metadata"]["source"] = "youtube"
    with pytest.raises(SchemaError, match="source"):
        validate_episode(ep, SMALL_SPEC)


def test_camera_mismatch_is_refused():
    other = EpisodeSpec(cameras={"front": (16, 16)})
    with pytest.raises(SchemaError, match="image_wrist"):
        validate_episode(make_episode(), other)


def test_builder_refuses_wrong_action_dim_and_shape_change():
    builder = EpisodeBuilder(SMALL_SPEC, episode_id="b", task="t", instruction="i")
    obs = {"image_front": np.zeros((16, 16, 3), np.uint8), "image_wrist": np.zeros((16, 16, 3), np.uint8),
           "state": np.zeros(19, np.float32)}
    builder.start(obs)
    with pytest.raises(SchemaError, match="step 0.*'action'"):
        builder.add(np.zeros(6), 0.0, obs, terminated=False)
    bad = dict(obs, image_front=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SchemaError, match="step 1.*observation/image_front"):
        builder.add(np.zeros(7), 0.0, bad, terminated=False)


def test_optional_fields_and_spec_json():
    spec = EpisodeSpec(cameras={"front": (16, 16)}, embedding_dim=8, with_mc_return=True)
    assert EpisodeSpec.from_json(spec.to_json()) == spec
    fields = spec.step_fields()
    assert fields["embedding"] == ((8,), "float32") and fields["mc_return"] == ((), "float32")
    features = tfds_features(spec)
    assert set(features["steps"].feature) >= {"embedding", "mc_return", "observation", "intervention"}
    assert json.loads(spec.to_json())["cameras"] == {"front": [16, 16]}


def test_flatten_round_trip():
    tree = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert flatten(tree) == {"a/b": 1, "a/c/d": 2, "e": 3}
    assert unflatten(flatten(tree)) == tree
