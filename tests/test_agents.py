"""The online methods of the agent registry (`agents/registry.py`): ConRFT, HG-DAgger and RLPD.

Per agent: its learner step moves the parameters in the expected direction on hand-made batches
(real JAX steps), and its policy acts in the simulator through `agents/train.py --stage=online
--agent=X` (real MuJoCo, real Reverb, the tiny config, a few dozen env steps)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_train_main, tiny_config
from test_training import REPO, fake_batch, step_item
from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.config import loss_preset
from vlarft.agents.hg_dagger import BCLearner
from vlarft.agents.networks.gaussian import GaussianActor, gaussian_actions
from vlarft.agents.registry import AGENTS, agent_builder
from vlarft.agents.rlpd import RLPDLearner
from vlarft.tools import eval_policy

STATE_DIM, ACTION_DIM = 19, 7


def mixed(online, demo, parts=2):
    """One learner step's item from two tables as `BatchIterator` gives it: the online block
    (`parts` copies of `online`) first, then the demo block; `source` 0 / 1."""
    item = step_item(*[online] * parts, *[demo] * parts)
    n, m = parts * len(online["reward"]), parts * len(demo["reward"])
    return dict(item, source=jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(m, jnp.int32)]))


def changed(a, b) -> bool:
    return not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def test_the_registry_names_the_three_methods_and_conrft_is_the_builder_itself():
    assert agent_builder("conrft") is ConRFTBuilder
    assert set(AGENTS) == {"conrft", "hg_dagger", "rlpd"}
    with pytest.raises(ValueError, match="unknown agent 'dagger'.*conrft, hg_dagger, rlpd"):
        agent_builder("dagger")


def test_hg_dagger_imitates_human_rows_only_and_has_no_critic_update():
    learner = BCLearner(tiny_config(), loss_preset("stable", "online"), ACTION_DIM, ("front", "wrist"),
                        np.zeros(STATE_DIM), np.ones(STATE_DIM), online_source=0, rows_per_source=(16, 16))
    state = learner.init(jax.random.PRNGKey(0), fake_batch(0))
    # The policy's own online rows (no intervention) teach nothing: the head does not move.
    item = dict(mixed(fake_batch(1), fake_batch(2)), source=jnp.zeros(64, jnp.int32))
    after, metrics = learner.step(state, item)
    assert float(metrics["human_rows"]) == 0.0 and not changed(after.head_params, state.head_params)
    # Demo rows + interventions: the BC error on them falls; the critic never moves.
    online = dict(fake_batch(3), intervention=jnp.arange(16) < 4)  # 4 intervention rows
    item = mixed(online, fake_batch(4))
    first = None
    for _ in range(30):
        new, metrics = learner.step(state if first is None else new, item)
        first = float(metrics["bc_mse"]) if first is None else first
    assert float(metrics["human_rows"]) == pytest.approx(20 / 32)
    assert float(metrics["bc_mse"]) < 0.5 * first, (first, float(metrics["bc_mse"]))
    assert not changed(new.critic_params, state.critic_params) and changed(new.head_params, state.head_params)


def test_rlpd_temperature_moves_toward_the_target_entropy_and_td_error_falls():
    learner = RLPDLearner(tiny_config(), loss_preset("stable", "online"), ACTION_DIM, ("front", "wrist"),
                          np.zeros(STATE_DIM), np.ones(STATE_DIM), online_source=0, rows_per_source=(8, 8))
    state = learner.init(jax.random.PRNGKey(0), fake_batch(0))
    item = mixed(fake_batch(5, batch=8), fake_batch(6, batch=8))
    losses, entropies, alphas = [], [], []
    new = state
    for _ in range(40):
        new, metrics = learner.step(new, item)
        losses.append(float(metrics["td_loss"]))
        entropies.append(float(metrics["entropy"]))
        alphas.append(float(jnp.exp(new.log_alpha)))
    target = -ACTION_DIM
    assert learner.target_entropy == target
    # alpha moves toward the target entropy: the squashed initial policy starts below it (about
    # -13.5 nats against -7), so the first update raises alpha (Adam's first step: lr x sign).
    start = tiny_config().sac.init_temperature
    assert entropies[0] < target and alphas[0] == pytest.approx(start * np.exp(3e-4), rel=1e-4), (alphas, entropies)
    # Then the entropy rises above the target (the entropy bonus) and alpha turns down again.
    turned_down = np.log(max(alphas)) - np.log(alphas[-1])  # Adam moves log alpha by about lr (3e-4) a step
    assert np.all(np.asarray(entropies[-10:]) > target) and turned_down > 3e-4, (alphas, entropies)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert changed(new.head_params, state.head_params)
    actions = learner.eval_actions(new.policy_params, np.zeros((3, 64), np.float32), np.zeros((3, STATE_DIM)))
    assert actions.shape == (3, ACTION_DIM) and np.all(np.abs(actions) <= 1.0)


def with_frames(batch: dict, seed: int, size: int = 32) -> dict:
    """`batch` with uint8 frames of the two cameras in both observations (the pixel variant's input)."""
    rng = np.random.default_rng(seed)
    rows = len(batch["reward"])
    frames = lambda: {f"image_{c}": jnp.asarray(rng.integers(0, 256, (rows, size, size, 3)), jnp.uint8)
                      for c in ("front", "wrist")}
    return dict(batch, observation={**batch["observation"], **frames()},
                next_observation={**batch["next_observation"], **frames()})


def test_rlpd_pixel_variant_trains_its_own_encoders_and_acts_from_frames():
    """HIL-SERL's variant: critic and actor read the frames through their own ResNet encoders
    (`critic.input=pixels`); one learner step updates the critic's convolutions (and the actor's
    separate copy), the TD error falls on a fixed batch, the actor's action depends on the frame."""
    config = tiny_config()
    # One encoder stage: the four of ResNet-10 add ~20 s of compilation here (test_networks covers them).
    config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, input="pixels", encoder_widths=(8,)))
    learner = RLPDLearner(config, loss_preset("stable", "online"), ACTION_DIM, ("front", "wrist"),
                          np.zeros(STATE_DIM), np.ones(STATE_DIM), online_source=0, rows_per_source=(8, 8))
    state = learner.init(jax.random.PRNGKey(0), with_frames(fake_batch(0, batch=8), 0))
    item = mixed(with_frames(fake_batch(5, batch=8), 5), with_frames(fake_batch(6, batch=8), 6))
    convs = lambda params: {k: v for k, v in flax.traverse_util.flatten_dict(params).items()
                            if any("conv" in str(part).lower() for part in k)}
    assert convs(state.critic_params) and convs(state.head_params)  # both own an encoder
    new, metrics = learner.step(state, item)
    first = float(metrics["td_loss"])
    assert changed(convs(new.critic_params), convs(state.critic_params))
    assert changed(convs(new.head_params), convs(state.head_params))
    for _ in range(25):
        new, metrics = learner.step(new, item)
    assert float(metrics["td_loss"]) < 0.5 * first, (first, float(metrics["td_loss"]))
    # The deterministic action is a function of the frames: two different frames, two actions.
    actor = GaussianActor(config.sac, config.critic, ("front", "wrist"), ACTION_DIM)
    observation = with_frames(fake_batch(7, batch=2), 7)["observation"]
    observation = {k: v[:1] if k.startswith("image_") else v[1:] for k, v in observation.items()}
    other = dict(observation, image_front=255 - observation["image_front"])
    act = lambda obs: np.asarray(gaussian_actions(actor.apply, new.head_params, obs,
                                                  jax.random.PRNGKey(0), True))
    assert act(observation).shape == (1, ACTION_DIM) and np.all(np.abs(act(observation)) <= 1.0)
    assert not np.allclose(act(observation), act(other))


def run_online_cli(agent: str, init_from: str, dataset_dir: str, workdir, *extra: str) -> dict:
    cmd = [sys.executable, str(REPO / "agents" / "train.py"), "--stage=online", f"--agent={agent}", "--config=tiny",
           "--batch_size=16", f"--workdir={workdir}", f"--init_from={init_from}", f"--dataset_dir={dataset_dir}",
           "--env_steps=60", "--min_online=20", "--publish_every=2", "--eval_episodes=1", "--no_progress",
           "--teleop=scripted_intervention", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# The pixel variant with a one-stage encoder (as in the test above): compiling the four stages is
# most of such a test's time, and the four-stage encoder is covered by test_networks.
PIXELS_ONE_STAGE = ("--critic_input=pixels", "--set=critic.encoder_widths=8")


@pytest.mark.parametrize("agent,extra", [("hg_dagger", ()), ("rlpd", ()), ("rlpd", PIXELS_ONE_STAGE)],
                         ids=["hg_dagger", "rlpd_embedding", "rlpd_pixels"])
def test_each_baseline_acts_and_learns_through_the_online_command(agent, extra, sft_run, embedded, tmp_path,
                                                                  capsys):
    result = run_online_cli(agent, sft_run[0], embedded.dataset_dir, tmp_path / agent, *extra)
    assert result["env_steps"] >= 60 and result["learner_steps"] > 0, result
    assert result["replay_items_written"]["online"] == result["env_steps"]
    assert {"success_rate", "mean_episode_length", "episodes"} <= set(result)
    meta = json.loads((tmp_path / agent / "policy" / "policy.json").read_text())
    assert meta["agent"] == agent and meta["stage"] == "online"
    # The export acts through the evaluation tool with the agent's own head (RLPD: the Gaussian
    # actor its head file holds, not a consistency head).
    evaluated = eval_policy.run(eval_policy.parse_args([f"--policy={tmp_path / agent}", "--episodes=1",
                                                        "--no_progress", f"--out={tmp_path / 'eval'}"]))
    assert evaluated["agent"] == agent and evaluated["episodes"] == 1 and 0 < evaluated["lengths"][0] <= 100
    assert Path(evaluated["video"]).stat().st_size > 0
    # A resume refuses another agent (the agent is part of the run's learning config); the pixel
    # variant is the same agent as rlpd_embedding, whose run checks it.
    if extra:
        return
    other = {"hg_dagger": "rlpd", "rlpd": "hg_dagger"}[agent]
    capsys.readouterr()
    code = run_train_main(["--stage=online", f"--agent={other}", "--config=tiny", "--batch_size=16",
                           f"--workdir={tmp_path / agent}", f"--init_from={sft_run[0]}",
                           f"--dataset_dir={embedded.dataset_dir}", "--no_progress"])
    err = capsys.readouterr().err
    assert code == 1 and "trained with another config" in err, err[-2000:]


def test_the_online_stage_refuses_a_start_the_agent_cannot_use(sft_run, embedded, tmp_path):
    from vlarft.agents import training
    from vlarft.agents.online import run_online

    options = training.StageOptions(dataset_dir="", workdir=str(tmp_path / "w"), steps=0, eval_episodes=0,
                                    init_from=sft_run[0], show_progress=False)
    config = tiny_config()
    with pytest.raises(training.ConfigMismatchError, match="conrft starts from a workdir of the offline stage"):
        run_online(options, config, loss_preset("stable", "online"))
    rlpd = dataclasses.replace(config, online=dataclasses.replace(config.online, agent="rlpd"))
    with pytest.raises(training.ConfigMismatchError, match="needs --dataset_dir"):
        run_online(options, rlpd, loss_preset("stable", "online"))
