"""`python -m sim.des SCENARIO.toml [--set key=value ...] [--out runs]`: run a
discrete-event simulation and write runs/<name>-<time>/ (metrics.jsonl, summary.json,
report.md, plots). Prints the summary's headline figures as `name: value` lines."""

from __future__ import annotations

import argparse
import sys

from p2pfl.errors import ConfigError
from sim.strict import override_value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.des", description=__doc__)
    parser.add_argument("scenario", help="a DES scenario TOML (sim/des/scenarios/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set rounds=3 --set committee.size=9",
    )
    parser.add_argument("--out", default="runs", help="folder for the run's folder")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    args = parser.parse_args(argv)

    from sim.des.engine import Engine
    from sim.des.report import new_run_dir, round_records, summarise, write_run
    from sim.des.scenario import load_des_scenario

    try:
        overrides = dict(item.split("=", 1) for item in args.set)
        scenario = load_des_scenario(
            args.scenario, {k: override_value(v) for k, v in overrides.items()}
        )
        engine = Engine(scenario, progress=None if args.quiet else print)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine.run()
    records = round_records(engine)
    summary = summarise(engine, records)
    run_dir = new_run_dir(f"des-{scenario.name}", args.out)
    write_run(run_dir, engine, records, summary)
    for key, value in sorted(summary.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"run folder: {run_dir}")
    return 0 if summary["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
