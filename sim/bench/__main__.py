"""`python -m sim.bench NAME [NAME ...]` or `python -m sim.bench all`."""

import importlib
import pkgutil
import sys

import sim.bench as bench_pkg
from sim.bench import BenchError


def available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m sim.bench NAME [NAME ...] | all\nbenchmarks: {', '.join(names)}")
        return 0 if argv else 2
    wanted = names if argv == ["all"] else argv
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in wanted:
        try:
            importlib.import_module(f"sim.bench.{name}").run()
        except BenchError as exc:
            print(f"{name}: could not measure: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
