"""``wavae latent``: latent paths on a bundle (see ``wavae.device.latent``); no torch.

    wavae latent encode [--bundle B] IN.wav -o A.npz
    wavae latent decode [--bundle B] A.npz -o OUT.wav
    wavae latent edit A.npz -o B.npz [--scale S] [--bias DIM=V] [--randomize SIGMA] [--seed N]
                                      [--reverse] [--curve DIM=CURVE.json] [--curve-mode add|set]
    wavae latent interpolate A.npz B.npz -o AB.npz [--length N]
    wavae latent plane A B C D (--x X --y Y | --xy GESTURE.json) -o P.npz [--length N]

``edit`` applies its operators in the order they are given on the command
line; ``--seed`` and ``--curve-mode`` are settings, not operators (the k-th
``--randomize`` draws from seed ``N + k``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from wavae.errors import WavaeError
from wavae.paths import input_file, output_file

from .bundle import load_bundle
from .shipped import bundle_or_default
from .latent import (
    CURVE_MODES,
    Bias,
    Curve,
    LatentOpError,
    LatentPath,
    PathCodec,
    Randomize,
    Reverse,
    Scale,
    apply_ops,
    check_curve,
    interpolate,
    load_path,
    plane,
    save_path,
)


class _Ordered(argparse.Action):
    """Append ``(flag, value)`` to ``namespace.ops``, so operators keep their command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        ops = list(getattr(namespace, "ops", None) or [])
        ops.append((self.dest, values))
        namespace.ops = ops


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="latent_command", metavar="ACTION")
    sub.required = True

    e = sub.add_parser("encode", help="encode an audio file into a latent path (.npz)")
    e.add_argument("--bundle", default=None, help="bundle directory written by `wavae export` (default: the shipped model)")
    e.add_argument("input", metavar="IN.wav", help="audio file, mono or stereo, any rate (resampled)")
    e.add_argument("-o", "--output", required=True, metavar="A.npz")

    d = sub.add_parser("decode", help="decode a latent path into audio (float WAV at the model rate)")
    d.add_argument("--bundle", default=None, help="the bundle that encoded the path (default: the shipped model)")
    d.add_argument("input", metavar="A.npz")
    d.add_argument("-o", "--output", required=True, metavar="OUT.wav")

    ed = sub.add_parser("edit", help="apply operators to a path, in the order given",
                        description="Apply operators to a latent path, in the order given on the command line.")
    ed.add_argument("input", metavar="A.npz")
    ed.add_argument("-o", "--output", required=True, metavar="B.npz")
    ed.add_argument("--scale", dest="scale", type=float, action=_Ordered, metavar="S", help="z *= S")
    ed.add_argument("--bias", dest="bias", action=_Ordered, metavar="DIM=V", help="z[DIM] += V (repeatable)")
    ed.add_argument("--randomize", dest="randomize", type=float, action=_Ordered, metavar="SIGMA",
                    help="z += SIGMA * N(0, 1)")
    ed.add_argument("--reverse", dest="reverse", nargs=0, action=_Ordered, help="play the path backwards")
    ed.add_argument("--curve", dest="curve", action=_Ordered, metavar="DIM=CURVE.json",
                    help="a breakpoint curve [[t, value], ...] (t in 0..1) for dimension DIM (repeatable)")
    ed.add_argument("--curve-mode", choices=CURVE_MODES, default="add",
                    help="curves are added to their dimension (add, default) or replace it (set)")
    ed.add_argument("--seed", type=int, default=0, help="random seed of --randomize (default 0)")

    i = sub.add_parser("interpolate", help="the seed's A->B: z[n] = z_a[n](1 - n/N) + z_b[n](n/N)")
    i.add_argument("a", metavar="A.npz")
    i.add_argument("b", metavar="B.npz")
    i.add_argument("-o", "--output", required=True, metavar="AB.npz")
    i.add_argument("--length", type=int, default=None, metavar="N",
                   help="frames (default: the shorter path; a shorter path holds its last frame)")

    pl = sub.add_parser("plane", help="bilinear mix of four paths: A (0,0), B (1,0), C (0,1), D (1,1)")
    for name in "abcd":
        pl.add_argument(name, metavar=f"{name.upper()}.npz")
    pl.add_argument("--x", type=float, default=None, help="position 0..1 between A and B (and C and D)")
    pl.add_argument("--y", type=float, default=None, help="position 0..1 between A and C (and B and D)")
    pl.add_argument("--xy", metavar="GESTURE.json", default=None,
                    help="a moving position: breakpoints [[t, x, y], ...] with t in 0..1 of the path")
    pl.add_argument("-o", "--output", required=True, metavar="P.npz")
    pl.add_argument("--length", type=int, default=None, metavar="N", help="frames (default: the shortest path)")


def read_json(file: str, what: str) -> Any:
    p = input_file(file, what)
    try:
        return json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LatentOpError(f"{what} {p} is not JSON ({e})") from None
    except OSError as e:
        raise LatentOpError(f"cannot read {what} {p}: {e.strerror}") from None


def _dim_value(text: str, flag: str) -> tuple[int, str]:
    dim, sep, value = text.partition("=")
    try:
        d = int(dim)
    except ValueError:
        d = -1
    if not sep or d < 0 or not value:
        raise LatentOpError(f"{flag} takes DIM=VALUE with DIM a latent dimension (0, 1, ...), got {text!r}")
    return d, value


def edit_ops(args: argparse.Namespace) -> list:
    """The operators of ``wavae latent edit``, in command-line order."""
    ops = []
    randomized = 0
    for kind, value in getattr(args, "ops", None) or []:
        if kind == "scale":
            ops.append(Scale(value))
        elif kind == "bias":
            d, v = _dim_value(value, "--bias")
            try:
                ops.append(Bias(d, float(v)))
            except ValueError:
                raise LatentOpError(f"--bias {value}: {v!r} is not a number") from None
        elif kind == "randomize":
            ops.append(Randomize(value, args.seed + randomized))
            randomized += 1
        elif kind == "reverse":
            ops.append(Reverse())
        elif kind == "curve":
            d, file = _dim_value(value, "--curve")
            pts = check_curve(read_json(file, "curve"), f"curve {file}")
            ops.append(Curve(d, tuple((float(t), float(v)) for t, v in pts), args.curve_mode))
    return ops


def main(args: argparse.Namespace) -> int:
    cmd = args.latent_command
    if cmd == "encode":
        out = output_file(args.output, (args.input,))
        bundle = load_bundle(bundle_or_default(args.bundle))
        with PathCodec(bundle) as codec:
            path = codec.encode_file(args.input, progress="encode")
        save_path(out, path)
        print(f"wrote {out}: {path.frames} frames ({path.seconds:.2f} s) x {path.meta.latent_dim} dimensions")
    elif cmd == "decode":
        path = load_path(args.input)
        output_file(args.output, (args.input,))
        bundle = load_bundle(bundle_or_default(args.bundle))
        path.check_bundle(bundle, f"the path {args.input}")
        with PathCodec(bundle) as codec:
            n = codec.decode_to_file(path, args.output, inputs=(args.input,), progress="decode")
        print(f"wrote {args.output}: {n / bundle.sample_rate:.2f} s at {bundle.sample_rate} Hz")
    elif cmd == "edit":
        path = load_path(args.input)
        ops = edit_ops(args)
        _save(apply_ops(path, ops), args.output, (args.input,), f"{len(ops)} operator(s)")
    elif cmd == "interpolate":
        paths = [load_path(args.a), load_path(args.b)]
        _save(interpolate(*paths, length=args.length, names=(args.a, args.b)), args.output, (args.a, args.b), "A->B")
    elif cmd == "plane":
        names = (args.a, args.b, args.c, args.d)
        if args.xy is not None and (args.x is not None or args.y is not None):
            raise WavaeError("give either --x X --y Y (a fixed point) or --xy GESTURE.json (a moving one), not both")
        if args.xy is None and (args.x is None or args.y is None):
            raise WavaeError("the plane needs a position: --x X --y Y (each 0..1), or --xy GESTURE.json")
        xy = read_json(args.xy, "gesture") if args.xy is not None else (args.x, args.y)
        corners = [load_path(n) for n in names]
        _save(plane(corners, xy, length=args.length, names=names), args.output, names, "plane")
    return 0


def _save(path: LatentPath, out: str, inputs: tuple[str, ...], what: str) -> None:
    written = save_path(out, path, inputs)
    print(f"wrote {written}: {what}, {path.frames} frames ({path.seconds:.2f} s)")


__all__ = ["add_arguments", "edit_ops", "main", "read_json"]
