"""DVC stage ``publish``: the shards, where every node of a cluster reads them.

With ``storage.root`` set, uploads ``data/shards`` once per manifest hash to
``{storage.root}/shards/<manifest sha256>/`` (immutable; a set already there is checked, not
uploaded again). Without it, nothing is copied: the training stages read ``data/shards``. Out:
``data/published.json`` (committed, so it travels with ``ray job submit --working-dir``): the
root, the URL and the manifest hash. Reads ``storage.root``.
"""

from __future__ import annotations

import argparse
import json

from ganlib.data.publish import RECORD, publish_shards
from pipeline import _stage
from pipeline._stage import SHARDS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.publish", description=__doc__)
    parser.parse_args(argv)  # no options: --help, and refuse unknown ones
    root = _stage.params().storage.root
    record = publish_shards(SHARDS, root)
    done = "uploaded to" if record.pop("uploaded") else "already at" if root else "read in place at"
    RECORD.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"publish: shards {record['manifest_sha256'][:12]} {done} {record['url']}")


if __name__ == "__main__":
    _stage.run(main)
