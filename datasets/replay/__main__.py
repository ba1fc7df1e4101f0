"""Standalone replay server.

  python -m vlarft.datasets.replay serve --port=PORT --spec_from=DATASET_DIR \
      [--checkpoint_dir=DIR] [--observation_keys=embedding,state] [--<ReplayConfig field>=...]

Prints `localhost:PORT` as its first stdout line, serves until Ctrl-C or SIGTERM, then writes a
checkpoint when --checkpoint_dir is given (and restores the newest one from there at start).
The server listens on every interface (Reverb 0.14 has no bind-address option): its start-up
message says how to keep it off untrusted networks.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading

from vlarft.datasets.replay.tables import (ReplayConfig, ReplayError, ReplayServer, exposure_notice,
                                           transition_signature)


def _parse_error_buffer(text: str):
    values = [float(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else tuple(values)


def _parsers() -> dict:
    return {"observation_keys": lambda text: tuple(k for k in text.split(",") if k),
            "error_buffer": _parse_error_buffer}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlarft.datasets.replay",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a replay server until Ctrl-C/SIGTERM")
    serve.add_argument("--port", type=int, default=None, help="default: a free port")
    serve.add_argument("--spec_from", required=True, help="converted dataset dir giving the shapes")
    serve.add_argument("--checkpoint_dir", default=None)
    special = _parsers()
    for field in dataclasses.fields(ReplayConfig):
        kind = special.get(field.name, type(field.default))
        serve.add_argument(f"--{field.name}", type=kind, default=None,
                           help=f"ReplayConfig.{field.name} (default {field.default!r})")
    return parser


def serve(args: argparse.Namespace) -> None:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ReplayConfig)
                 if getattr(args, f.name) is not None}
    config = ReplayConfig(**overrides)
    signature = transition_signature(args.spec_from, config.observation_keys)
    server = ReplayServer.from_config(config, signature, port=args.port,
                                      checkpoint_dir=args.checkpoint_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(server.address, flush=True)
    print(f"serving tables {list(server.table_names)} on port {server.port} (all interfaces); "
          f"Ctrl-C or SIGTERM to stop\n{exposure_notice(server.port)}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        if args.checkpoint_dir:
            print(f"checkpoint: {server.checkpoint()}", flush=True)
        server.stop()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
    except (ReplayError, OSError, ValueError) as e:  # bad flags or dataset, busy port, unwritable checkpoint dir
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
