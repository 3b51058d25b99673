"""The ``ganlib`` command.

``ganlib shards info PATH`` prints what a shard directory (or its manifest) holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ganlib.errors import GanlibError


def _shards_info(args: argparse.Namespace) -> None:
    from ganlib.data.shards import summarize

    info = summarize(args.path)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    print(f"{args.path}: {info['samples']} samples ({', '.join(info['fields'])})")
    for split, s in info["splits"].items():
        print(f"  {split}: {s['samples']} samples in {s['shards']} shards")
        if s["first_keys"]:
            print(f"    e.g. {', '.join(s['first_keys'])}")
    if info["classes"]:
        counts = ", ".join(f"{name}: {n}" for name, n in info["classes"].items())
        print(f"  classes ({len(info['classes'])}): {counts}")
    else:
        print("  classes: none (unlabelled)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganlib", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    shards = commands.add_parser("shards", help="inspect WebDataset shards")
    shards_cmd = shards.add_subparsers(dest="shards_command", required=True)
    info = shards_cmd.add_parser("info", help="counts, classes and sample keys of a shard dir")
    info.add_argument("path", help="a shard directory (data/shards) or its manifest.parquet")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_shards_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GanlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
