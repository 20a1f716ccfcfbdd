"""`python -m sim SCENARIO.toml [--set key=value ...]`: run a simulation, print the run folder "
"last."""

import argparse
import signal
import sys
from typing import Any

from p2pfl.errors import P2PFLError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim", description="Run a p2pfl simulation scenario."
    )
    parser.add_argument("scenario", help="scenario TOML file (see sim/scenarios/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set rounds=3 --set committee.size=5",
    )
    parser.add_argument("--runs", default="runs", help="folder for run outputs (default: runs/)")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run every node as its own OS process against a local anvil chain",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="K",
        help="like --processes, but the nodes dealt over K processes of one event loop each",
    )
    args = parser.parse_args(argv)
    from p2pfl.logs import setup_logging
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    setup_logging()
    overrides = {}
    from sim.strict import override_value

    for item in args.set:
        key, _, raw = item.partition("=")
        overrides[key] = override_value(raw) if raw else ""
    try:
        scenario = load_scenario(args.scenario, overrides)
        if args.processes or args.shards:
            from sim.processes import run_processes

            run_processes(scenario, args.runs, quiet=args.quiet, shards=args.shards)
        else:
            run_scenario(scenario, args.runs, quiet=args.quiet)
    except P2PFLError as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the run as Ctrl-C would: its processes (nodes, shards, anvil) are
    stopped by the run's own clean-up instead of being left behind."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
