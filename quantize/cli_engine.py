"""``wavae engine BUNDLE [--fp16|--int8] [--force] [--check-only]``

Builds TensorRT engines from a bundle's ONNX graphs on the Jetson (TensorRT from
JetPack), saved under BUNDLE/engines/ with a fingerprint; an engine whose
fingerprint (TensorRT version, GPU, compute capability, ONNX checksum) differs
from this machine's is rebuilt.  ``--check-only`` runs the operator/static-shape
checker, which needs neither a GPU nor TensorRT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wavae.progress import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory (from `wavae export`)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fp16", action="store_true", help="build fp16 engines (from an fp32 or fp16 bundle)")
    group.add_argument("--int8", action="store_true", help="build int8 engines (from an int8 Q/DQ bundle)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the fingerprint matches")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace (default 1024 MiB)")
    parser.add_argument(
        "--check-only", action="store_true",
        help="only check that TensorRT's ONNX parser supports every operator and that all shapes are static",
    )


def main(args: argparse.Namespace) -> int:
    from .bundle import verify_bundle_files
    from .tensorrt import TensorRTError, build_bundle_engines
    from .trt_ops import MATRIX_SOURCE, check_bundle_for_tensorrt

    if args.check_only:
        verify_bundle_files(args.bundle)
        problems = check_bundle_for_tensorrt(args.bundle)
        print(json.dumps({"bundle": str(args.bundle), "matrix": MATRIX_SOURCE, "problems": problems}, indent=2))
        if problems:
            raise TensorRTError(f"{len(problems)} problem(s) for TensorRT (listed above)")
        return 0

    bar = Progress(2, "engine", "graph")

    def progress(msg: str) -> None:
        bar.set_description(msg)
        bar.update(1)

    try:
        result = build_bundle_engines(
            args.bundle, fp16=args.fp16, int8=args.int8, force=args.force,
            workspace_mb=args.workspace_mb, progress=progress,
        )
    finally:
        bar.close()
    print(json.dumps(result, indent=2))
    return 0
