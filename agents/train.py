"""Train the ConRFT agent: `--stage=sft|offline|online`.

    python agents/train.py --stage=sft --dataset_dir=DATA/sim_pick_cube/1.0.0 --workdir=runs/sft --config=tiny --steps=2000
    python pipelines/embed_dataset.py --dataset_dir=DATA/sim_pick_cube/1.0.0 --policy_from=runs/sft --output_dir=DATA
    python agents/train.py --stage=offline --dataset_dir=DATA/sim_pick_cube_emb/1.0.0 --workdir=runs/offline \\
        --config=tiny --steps=2000

    python agents/train.py --stage=online --workdir=runs/online --init_from=runs/offline --env=sim:pick_cube \
        --teleop=scripted_intervention --env_steps=2000
    python agents/train.py --stage=online --agent=hg_dagger|rlpd --workdir=runs/online_rlpd --init_from=runs/sft \
        --dataset_dir=DATA/sim_pick_cube_emb/1.0.0 --env_steps=2000

A run resumes when `--workdir` holds a checkpoint. The last line of standard output is one JSON
object with the final evaluation: success_rate, mean_episode_length, episodes, learner_steps,
wall_s (plus the held-out BC error and more).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vlarft.agents.compilation_cache import enable_compilation_cache  # noqa: E402
from vlarft.agents.process_settings import use_process_settings  # noqa: E402
from vlarft.agents.terminal import add_verbose_argument, quiet_command_line  # noqa: E402


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, choices=("sft", "offline", "online"))
    parser.add_argument("--dataset_dir", default="", help="RLDS dataset version directory (online: default "
                        "the offline run's embedded dataset)")
    parser.add_argument("--workdir", required=True, help="checkpoints, logs, videos, policy export")
    parser.add_argument("--config", default="tiny", choices=("tiny", "small"), help="model size preset")
    parser.add_argument("--steps", type=int, default=2000, help="learner steps to reach")
    parser.add_argument("--batch_size", type=int, default=0, help="override the config's batch size")
    parser.add_argument("--learning_rate", type=float, default=0.0, help="override the config's learning rate")
    parser.add_argument("--critic_input", choices=("embedding", "pixels"), default="",
                        help="critic reads cached embeddings (CPU default) or its own conv encoders")
    parser.add_argument("--loss_preset", choices=("stable", "paper", "reference"), default="stable",
                        help="loss weights of the paper or of the reference code")
    parser.add_argument("--bc_weight", type=float, default=-1.0, help="override the preset's beta (BC weight)")
    parser.add_argument("--q_weight", type=float, default=-1.0, help="override the preset's eta (Q weight)")
    parser.add_argument("--online_bc_weight", type=float, default=-1.0,
                        help="online: BC weight of the policy's own online rows (1: whole batch, as the paper; "
                             "0: demos and interventions only)")
    parser.add_argument("--init_from", default="", help="policy workdir to start from (offline: SFT run)")
    parser.add_argument("--env", default="", help="evaluation env (default: sim:<dataset task>)")
    parser.add_argument("--eval_episodes", type=int, default=-1, help="episodes per evaluation (-1: config)")
    parser.add_argument("--eval_every", type=int, default=-1, help="learner steps between evaluations (-1: config)")
    parser.add_argument("--checkpoint_every", type=int, default=0, help="learner steps between checkpoints")
    parser.add_argument("--log_every", type=int, default=0, help="learner steps between TensorBoard points")
    parser.add_argument("--action_dim", type=int, default=7, help="action dimension the run expects")
    parser.add_argument("--backbone_weights", default="", help="SFT: local backbone checkpoint (msgpack) to start from")
    parser.add_argument("--backbone_from", default="",
                        help="SFT: a directory made by tools/import_octo.py: start from an imported Octo backbone")
    parser.add_argument("--critic_encoder_weights", default="", help="pixel critic: ResNet trunk weights file")
    parser.add_argument("--devices", default="", help="local JAX devices the learner update runs over, "
                        "data-parallel: all (default), a count N or ids 0,2")
    parser.add_argument("--seed", type=int, default=-1, help="override the config's seed")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_verbose_argument(parser)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field (agents/config.py), e.g. --set loss.q_normalize=true "
                             "--set train.critic_warmup_steps=200; repeatable")
    online = parser.add_argument_group("online stage (HIL-ConRFT)")
    online.add_argument("--agent", default="conrft",
                        help="online method (agents/registry.py): conrft (from an offline workdir) | hg_dagger | "
                             "rlpd (both from an SFT workdir, with --dataset_dir=<its embedded dataset>)")
    online.add_argument("--env_steps", type=int, default=2000, help="robot steps to collect")
    online.add_argument("--teleop", default="scripted_intervention",
                        help="human device: scripted_intervention (simulator) | spacemouse | keyboard | gamepad")
    online.add_argument("--updates_per_env_step", type=float, default=1.0,
                        help="update-to-data ratio: critic updates per collected env step")
    online.add_argument("--role", choices=("both", "learner", "actor"), default="both",
                        help="both: one process; learner: serve replay + parameters and learn up to --steps; "
                             "actor: act against --replay_address")
    online.add_argument("--replay_address", default="", help="HOST:PORT of the learner's replay server (actor)")
    online.add_argument("--replay_port", type=int, default=0, help="port of the learner's replay server (0: any)")
    online.add_argument("--min_online", type=int, default=100, help="online transitions before learning starts")
    online.add_argument("--publish_every", type=int, default=10, help="learner steps between parameter publications")
    online.add_argument("--eval_every_env_steps", type=int, default=0,
                        help="env steps between the actor's periodic evaluations (0: none)")
    online.add_argument("--online_eval_episodes", type=int, default=5, help="episodes per periodic evaluation")
    online.add_argument("--online_gate", choices=("refuse", "warn", "off"), default="refuse",
                        help="check the offline policy before acting: refuse a clearly broken one, warn, or skip")
    online.add_argument("--actor_index", type=int, default=0, help="this actor's slot (one per actor of a run)")
    online.add_argument("--actor_slots", type=int, default=8, help="learner: actor slots its server offers")
    online.add_argument("--params_secret_file", default="",
                        help="actor: a copy (mode 0600) of the learner's <workdir>/params_secret, which "
                             "authenticates the parameters it publishes")
    online.add_argument("--max_actor_lead", type=int, default=0,
                        help="learner: actors block this many env steps ahead of the UTD budget (0: never block; "
                             "simulators run in lockstep anyway, see --set online.lockstep=false)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    from vlarft.agents.config import get_config, with_overrides

    config = get_config(args.config)
    train = {k: v for k, v in dict(batch_size=args.batch_size, learning_rate=args.learning_rate,
                                     checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                                     devices=args.devices).items() if v}
    if args.eval_every >= 0:
        train["eval_every"] = args.eval_every
    if args.seed >= 0:
        train["seed"] = args.seed
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train))
    if args.critic_input:
        config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, input=args.critic_input))
    online = dict(agent=args.agent, env_steps=args.env_steps, teleop=args.teleop,
                  updates_per_env_step=args.updates_per_env_step,
                  min_online=args.min_online, role=args.role, replay_address=args.replay_address,
                  params_secret_file=args.params_secret_file,
                  publish_every=args.publish_every, max_actor_lead=args.max_actor_lead, replay_port=args.replay_port,
                  eval_every=args.eval_every_env_steps, eval_episodes=args.online_eval_episodes,
                  actor_index=args.actor_index, max_actors=args.actor_slots, gate=args.online_gate)
    config = dataclasses.replace(config, online=dataclasses.replace(config.online, **online))
    return with_overrides(config, args.set)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    use_process_settings()  # before JAX's first computation
    enable_compilation_cache()  # before the first compilation: a resumed run loads its programs
    import signal

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # SIGTERM saves like Ctrl-C
    from vlarft.agents import training
    from vlarft.agents.cli import run_cli
    from vlarft.agents.config import loss_preset, override_section

    if args.stage != "online" and not args.dataset_dir:
        print(f"error: --stage={args.stage} needs --dataset_dir", file=sys.stderr)
        return 2
    try:
        config = build_config(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def loss_for(stage: str):
        """The preset's weights for the stage, then --bc_weight/--q_weight/... and --set loss.*."""
        loss = loss_preset(args.loss_preset, stage)
        overrides = {k: v for k, v in (("bc_weight", args.bc_weight), ("q_weight", args.q_weight),
                                        ("online_bc_weight", args.online_bc_weight)) if v >= 0}
        return override_section(dataclasses.replace(loss, **overrides), "loss", args.set)
    options = training.StageOptions(dataset_dir=args.dataset_dir, workdir=args.workdir, steps=args.steps,
                                    env=args.env, eval_episodes=args.eval_episodes, init_from=args.init_from,
                                    loss_preset=args.loss_preset, action_dim=args.action_dim,
                                    backbone_weights=args.backbone_weights, backbone_from=args.backbone_from,
                                    critic_encoder_weights=args.critic_encoder_weights,
                                    show_progress=not args.no_progress)

    def work() -> dict:
        if args.stage == "sft":
            return training.run_sft(options, config)
        if args.stage == "offline":
            return training.run_offline(options, config, loss_for("offline"))
        from vlarft.agents.online import run_online

        return run_online(options, config, loss_for("online"))

    # errors: mismatches, bad or missing files, unwritable directories, replay unreachable
    return run_cli(work, "interrupted: a checkpoint was saved; run the same command to resume",
                   errors=(ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    quiet_command_line(sys.argv[1:])
    sys.exit(main())
