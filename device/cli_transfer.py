"""``wavae transfer``: style transfer, a sound from anywhere played through a model (no torch).

    wavae transfer [--bundle B] IN.wav -o OUT.wav [--loudness L]

The input (any rate, mono or stereo) is encoded into the bundle's latent and
decoded again: the model can only say what it learned, so a voice through a
strings model comes out as strings following the voice.  The loudness comes
from the input (its envelope), or is held at ``--loudness L`` (0..1, the
flattened scale the decoder takes).  The output is a float WAV at the model's
rate, as long as the input rounded up to a whole latent frame.
"""

from __future__ import annotations

import argparse

from wavae.paths import output_file

from .bundle import load_bundle
from .shipped import bundle_or_default
from .latent import PathCodec, check_loudness, with_loudness


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, help="bundle directory written by `wavae export` (default: the shipped model)")
    p.add_argument("input", metavar="IN.wav", help="audio file, mono or stereo, any rate (resampled)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav")
    p.add_argument("--loudness", type=float, default=None, metavar="L",
                   help="hold the loudness at L (0..1) instead of following the input's")


def main(args: argparse.Namespace) -> int:
    output_file(args.output, (args.input,))
    if args.loudness is not None:
        check_loudness(args.loudness)
    bundle = load_bundle(bundle_or_default(args.bundle))
    with PathCodec(bundle) as codec:
        path = codec.encode_file(args.input, progress="encode")
        if args.loudness is not None:
            path = with_loudness(path, args.loudness)
        n = codec.decode_to_file(path, args.output, inputs=(args.input,), progress="decode")
    print(f"wrote {args.output}: {n / bundle.sample_rate:.2f} s at {bundle.sample_rate} Hz, loudness "
          + ("from the input" if args.loudness is None else f"held at {args.loudness:g}"))
    return 0
