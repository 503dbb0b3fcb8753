"""Command line of the executor: ``python -m executor make-checkpoint --preset opt-tiny --out DIR [--lora]``.

:func:`main` takes ``argv`` so ``pipeboost make-checkpoint`` can delegate to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from executor.checkpoint import make_checkpoint
from pipeboost.model_config import MODEL_PRESETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m executor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-checkpoint", help="save a seeded random-weight model as safetensors")
    src = mk.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="model preset name")
    src.add_argument("--config", type=Path, help="a Hugging Face config.json to build from")
    mk.add_argument("--out", type=Path, required=True, help="output model folder")
    mk.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    mk.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    mk.add_argument("--shards", type=int, default=1, help="number of safetensors files (default 1)")
    lora = mk.add_argument_group("LoRA adapter (write a PEFT adapter for the base model instead of a checkpoint)")
    lora.add_argument("--lora", action="store_true", help="write a seeded random PEFT adapter to --out")
    lora.add_argument("--rank", type=int, default=8, help="adapter rank r (default 8)")
    lora.add_argument("--alpha", type=float, default=16.0, help="lora_alpha (default 16)")
    lora.add_argument("--target-modules", default="q_proj,v_proj",
                      help="comma-separated module names (default q_proj,v_proj)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the executor CLI; returns the process exit status."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "make-checkpoint":
        source = args.preset if args.preset else json.loads(args.config.read_text())
        if args.lora:
            from executor.lora import make_adapter

            modules = tuple(m for m in args.target_modules.split(",") if m)
            out = make_adapter(source, args.out, args.rank, args.alpha, modules, args.seed, args.dtype)
        else:
            out = make_checkpoint(source, args.out, seed=args.seed, dtype=args.dtype, shards=args.shards)
        sys.stdout.write(f"{out}\n")
    return 0
