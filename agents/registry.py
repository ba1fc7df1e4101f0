"""The agent registry: the online stage's methods by name (`--agent`, `OnlineConfig.agent`).

An agent is a builder class (`agents/builder.py` `ConRFTBuilder` or a subclass) supplying the
pieces that differ between methods; the replay server, tables, demo loading, actor, parameter
store, learner loop, checkpoints and evaluation are shared. To add a method, subclass
`ConRFTBuilder`, override what differs and register it here:

  * `make_learner()`: its learner (state, one update step, the acting parameters it publishes as
    `state.policy_params`), usually a `Learner` subclass overriding `init` and `_update`;
  * `make_policy(params, deterministic=..., seed=...)` and `acting_template()`: the acting policy
    assembled around those parameters, and their shape for the actors' parameter store;
  * `policy_from_export(export, ...)`: the acting policy of an export its online stage wrote
    (`tools/eval_policy.py` acts through `export_policy` here);
  * `starting_state(learner, fresh, init_from)`, `init_stages`, `runs_gate`: where it starts.
"""

from __future__ import annotations

from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.export import PolicyExport
from vlarft.agents.hg_dagger import HGDAggerBuilder
from vlarft.agents.rlpd import RLPDBuilder

AGENTS: dict[str, type[ConRFTBuilder]] = {
    "conrft": ConRFTBuilder,
    "hg_dagger": HGDAggerBuilder,
    "rlpd": RLPDBuilder,
}


def agent_builder(name: str) -> type[ConRFTBuilder]:
    """The builder class registered as `name`; a clear error lists the known ones."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r} (--agent / online.agent); known: {', '.join(AGENTS)}")
    return AGENTS[name]


def export_policy(export: PolicyExport, *, deterministic: bool = True, steps: int = 1, seed: int = 0):
    """The acting policy of any stage's export: the agent that wrote it (`meta["agent"]`, ConRFT's
    consistency head for SFT/offline exports) assembles it."""
    return agent_builder(export.meta.get("agent", "conrft")).policy_from_export(
        export, deterministic=deterministic, steps=steps, seed=seed)
