# The two commands of the README. Each one creates/updates .venv by itself first.
.PHONY: sim test setup bench

setup:
	@bash tools/setup_env.sh

# The main job on the embedded default: simulated robot, scripted operator, DirectRunner.
sim: setup
	MUJOCO_GL=egl TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python tools/run_sim_pipeline.py --workdir=runs/sim

# The test suite (pytest's own runner, so the checkout root is not put on sys.path).
test: setup
	MUJOCO_GL=egl TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/pytest -q

# Every speed benchmark, one table of figures vs targets (over an hour on 2 cores, the small pixel critic's 20 s updates most of it; not part of the tests).
bench: setup
	MUJOCO_GL=egl TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python tools/benchmark_all.py
