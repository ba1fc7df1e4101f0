"""HIL-ConRFT, the online stage: actors and a learner meeting at a Reverb server.

Actor side (`actor.py`): the actor drives the robot with the current policy while a human device
(the scripted intervener on the simulator) may take over at any step; it streams every step into
the `online` Reverb table as it happens (human-intervention transitions also into `demo`),
writes every episode as a raw RLDS episode file, applies new parameters at step boundaries
(fetched by a background `ParameterPoller`) and runs periodic evaluations; its control loop is
kept on time beside the learner thread by `robot_io/control_timing.py`.

Learner side (`learner_loop.py`): samples mixed online/demo batches paced by the online table's
rate limiter (the update-to-data ratio; in lockstep the actor also waits for the learner),
updates, publishes the actor head with a version number, and stops when collection stops.

Durability (`watermarks.py`): the read-progress -> checkpoint -> publish protocol that lets a
remote actor survive a learner `kill -9` without losing an acknowledged step.

The stage (`stage.py`): `run_online` wires replay server, learner, parameter store and (role
`both`) the actor thread; roles `learner` and `actor` split them across machines.
"""

from vlarft.agents.online.stage import run_online

__all__ = ["run_online"]
