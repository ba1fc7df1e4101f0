"""Import an Octo checkpoint as this toolkit's backbone, without the `octo` package.

    python tools/import_octo.py CHECKPOINT_DIR --out=DIR [--window=2] [--quiet]
    python tools/import_octo.py --size=small|base           # parameter count of a released size only

CHECKPOINT_DIR is an Octo checkpoint directory (config.json, dataset_statistics.json,
<step>/default/; e.g. octo-small-1.5 or octo-base-1.5, 1.0 checkpoints too). Prints the parameter
count and the mapping summary (every Octo parameter used and its name here; the ignored ones
grouped by reason: the T5 encoder and Octo's action head) and writes DIR for SFT
(`agents/train.py --stage=sft --backbone_from=DIR`). A checkpoint with an unknown parameter or a
shape that does not fit is refused, naming the key and both shapes (exit status 2).
`--size` prints the backbone parameter count of Octo-small/base widths (no checkpoint needed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vlarft.agents.octo_import import (RELEASED, OctoImportError, backbone_shapes, import_octo,  # noqa: E402
                                      released_config, save_import)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="Octo checkpoint directory")
    parser.add_argument("--out", default="", help="directory to write the imported backbone to")
    parser.add_argument("--window", type=int, default=2, help="observation frames per sample (Octo: 2)")
    parser.add_argument("--size", choices=sorted(RELEASED), help="print a released size's backbone parameter count")
    parser.add_argument("--quiet", action="store_true", help="print the totals only, not every used parameter")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.size:
        count = sum(math.prod(s) for s in backbone_shapes(released_config(args.size)).values())
        print(f"Octo-{args.size} backbone (without T5 and Octo's action head): {count:,} parameters")
        return 0
    if not args.checkpoint or not args.out:
        parser.error("give CHECKPOINT_DIR and --out=DIR (or --size)")
    try:
        result = import_octo(args.checkpoint, window=args.window)
    except (OctoImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = result.summary()
    if args.quiet:
        summary = "\n".join(line for line in summary.splitlines() if not line.startswith("  octo_transformer/"))
    print(summary)
    save_import(result, args.out)
    print(f"wrote {args.out} (SFT: agents/train.py --stage=sft --backbone_from={args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
