"""The training stages refuse meaningless flags, and a run interrupted by a real SIGINT resumes
bit for bit (the batch sampling generator's state travels with the checkpoint)."""

import dataclasses
import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from vlarft.agents import training
from vlarft.agents.checkpointing import Checkpointer
from vlarft.agents.config import get_config, loss_preset


def options(tmp_path, **overrides) -> training.StageOptions:
    return dataclasses.replace(training.StageOptions(dataset_dir=str(tmp_path / "no_dataset"), workdir=str(tmp_path / "w"),
                                                     steps=10, eval_episodes=0, show_progress=False), **overrides)


def test_negative_steps_and_an_sft_init_from_are_errors(tmp_path):
    config = get_config("tiny")
    with pytest.raises(ValueError, match="--steps=-5: .* cannot be negative"):
        training.run_sft(options(tmp_path, steps=-5), config)
    with pytest.raises(ValueError, match="--steps=-5"):
        training.run_offline(options(tmp_path, steps=-5), config, loss_preset("paper", "offline"))
    with pytest.raises(ValueError, match="--init_from=/nonexistent: the SFT stage does not start from a policy"):
        training.run_sft(options(tmp_path, init_from="/nonexistent"), config)
    assert not (tmp_path / "w").exists()  # refused before anything was written


def sampled_run(workdir, steps: int, interrupt_at: int | None = None):
    """A stage in miniature: run_loop over batches drawn from the stage's sampling generator, the
    state and checkpoints as SFT has them; resumes from `workdir` like the stages do."""
    config = get_config("tiny")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint_every=4, log_every=100))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, resumed, start = {"step": jnp.asarray(0), "w": jnp.zeros(8)}, None, 0
    if checkpointer.latest_step() is not None:
        state, resumed = checkpointer.restore(state)
        start = int(state["step"])
    rng = training.sampling_generator(config.train.seed, resumed, start)

    def step_fn(s):
        batch = rng.normal(size=8)  # StepData.sample draws its indices and crops like this
        if int(s["step"]) == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the batch was drawn, before the step is done
        return {"step": s["step"] + 1, "w": s["w"] * 0.5 + jnp.asarray(batch, jnp.float32)}, {"loss": 0.0}

    try:
        final, _ = training.run_loop(
            name="sampled", state=state, start_step=start, config=config, step_fn=step_fn, checkpointer=checkpointer,
            options=training.StageOptions(dataset_dir="", workdir=str(workdir), steps=steps, show_progress=False),
            meta={"stage": "sampled"}, evaluate_fn=lambda s, i: {}, export_fn=lambda s, i: None,
            resume_meta=training.resume_meta_of(rng))
    finally:
        checkpointer.close()
    return np.asarray(final["w"])


def test_a_run_interrupted_by_sigint_resumes_bit_identically(tmp_path):
    straight = sampled_run(tmp_path / "straight", steps=12)
    with pytest.raises(KeyboardInterrupt):
        sampled_run(tmp_path / "interrupted", steps=12, interrupt_at=6)
    assert Checkpointer(tmp_path / "interrupted" / "checkpoints").latest_step() == 6  # saved on the way out
    resumed = sampled_run(tmp_path / "interrupted", steps=12)
    assert straight.tobytes() == resumed.tobytes()


def test_unwritable_output_directories_are_error_lines_not_tracebacks(tmp_path, capsys):
    from conftest import SMALL_SPEC, make_episode, run_train_main
    from vlarft.datasets.raw_episodes import write_raw_episode
    from vlarft.pipelines import convert_demos

    (tmp_path / "raw").mkdir()
    for i in range(2):
        write_raw_episode(tmp_path / "raw" / f"ep{i}.npz", make_episode(f"ep{i}", seed=i), SMALL_SPEC)
    (tmp_path / "a_file").write_text("not a directory")
    unwritable = tmp_path / "a_file" / "out"
    assert convert_demos.main([f"--input={tmp_path / 'raw'}", f"--output_dir={unwritable}", "--dataset=d"]) == 1
    assert f"error: cannot write the dataset {unwritable}/d/1.0.0" in capsys.readouterr().err
    assert convert_demos.main([f"--input={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'data'}", "--dataset=d"]) == 0
    dataset_dir = capsys.readouterr().out.strip().splitlines()[-1]
    code = run_train_main(["--stage=sft", f"--dataset_dir={dataset_dir}", f"--workdir={unwritable}", "--config=tiny",
                           "--steps=1", "--eval_episodes=0", "--no_progress"])
    err = capsys.readouterr().err
    assert code == 1 and "error: " in err and "a_file/out" in err and "Traceback" not in err


SAVE_KILLED_BEFORE_ITS_COMMIT = """
import os, signal, sys
import jax.numpy as jnp
from vlarft.agents.checkpointing import Checkpointer
checkpointer = Checkpointer(sys.argv[1])
checkpointer.save(1, {"w": jnp.ones(1000)}, {"step": 1})
real_rename = os.rename
def rename(src, dst):
    if "orbax-checkpoint-tmp" in os.fspath(src):  # the save's commit
        os.kill(os.getpid(), signal.SIGKILL)
    real_rename(src, dst)
os.rename = rename
checkpointer.save(2, {"w": jnp.full(1000, 2.0)}, {"step": 2})
"""


def test_a_save_killed_before_its_commit_leaves_no_temporary_folder_behind(tmp_path):
    import subprocess
    import sys

    directory = tmp_path / "checkpoints"
    proc = subprocess.run([sys.executable, "-c", SAVE_KILLED_BEFORE_ITS_COMMIT, str(directory)], timeout=120)
    assert proc.returncode == -9
    assert [p.name for p in directory.iterdir() if "orbax-checkpoint-tmp" in p.name]  # what kill -9 left
    Checkpointer(directory).close()  # a reader (another process may be saving) deletes nothing
    assert [p.name for p in directory.iterdir() if "orbax-checkpoint-tmp" in p.name]
    checkpointer = Checkpointer(directory, cleanup_interrupted_saves=True)  # the run reopens its checkpoints
    try:
        assert sorted(p.name for p in directory.iterdir()) == ["1"]
        state, meta = checkpointer.restore({"w": jnp.zeros(1000)})
        assert meta == {"step": 1} and float(state["w"][0]) == 1.0
    finally:
        checkpointer.close()


def test_a_public_learner_needs_an_explicit_port_and_a_remote_actor_the_run_secret(tmp_path):
    from vlarft.agents.online import run_online

    config = get_config("tiny")
    learner = dataclasses.replace(config, online=dataclasses.replace(config.online, role="learner", replay_port=0))
    with pytest.raises(ValueError, match="--role=learner .* --replay_port=P"):
        run_online(options(tmp_path, init_from=str(tmp_path / "offline")), learner, loss_preset("paper", "online"))
    actor = dataclasses.replace(config, online=dataclasses.replace(config.online, role="actor",
                                                                   replay_address="localhost:1"))
    with pytest.raises(ValueError, match="--role=actor needs --params_secret_file"):
        run_online(options(tmp_path, init_from=str(tmp_path / "offline")), actor, loss_preset("paper", "online"))
