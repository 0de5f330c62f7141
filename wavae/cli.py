"""``wavae``: one command, many subcommands.

Subcommand modules are imported only when their subcommand runs, so the device
subcommands (``run``, ``profile``, ...) never pull in torch.  Each module has
``add_arguments(parser)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wavae.errors import EXIT_BAD_INPUT, WavaeError

# name -> (module, one-line help).  Desktop (torch) modules live in wavae.train /
# wavae.quantize; device modules in wavae.device and import no torch.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("wavae.train.cli_train", "train the VAE and the MelGAN vocoder (desktop, torch)"),
    "reconstruct": ("wavae.train.cli_reconstruct", "render a file through a trained run, offline or streaming"),
    "data": ("wavae.train.corpus", "build an offline training corpus (fluidsynth strings, espeak-ng speech)"),
    "prune": ("wavae.quantize.cli_prune", "structured channel pruning with a short fine-tune"),
    "export": ("wavae.quantize.cli_export", "export a run to a device bundle (ONNX + manifest.json)"),
    "verify": ("wavae.quantize.cli_verify", "compare a bundle streaming in onnxruntime with the torch reference"),
    "evaluate": ("wavae.quantize.cli_evaluate", "measure how much a run or bundle sounds like its input (metrics, report)"),
    "ship": ("wavae.quantize.ship", "make a trained run the shipped model: bundles, weights, evaluation, model card"),
    "engine": ("wavae.quantize.cli_engine", "build TensorRT engines from a bundle (Jetson)"),
    "run": ("wavae.device.cli_run", "run the instrument: live ALSA loop or file mode (device, no torch)"),
    "profile": ("wavae.device.cli_profile", "profile latency of a bundle on this machine (device, no torch)"),
    "panel": ("wavae.device.cli_panel", "check the knobs, encoders and buttons wiring live (device, no torch)"),
    "status": ("wavae.device.cli_status", "what the running instrument service is doing (device, no torch)"),
    "latent": ("wavae.device.cli_latent", "latent paths: encode, decode, edit, interpolate, plane (device, no torch)"),
    "transfer": ("wavae.device.cli_transfer", "style transfer: a sound played through a model (device, no torch)"),
    "web": ("wavae.device.cli_web", "serve the instrument's page: live controls and the playground (device, no torch)"),
}


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line told in one line, like every
    other bad input (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="wavae", description="The wavae instrument: train, export, run and profile (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad command line (already told in one line)
        return int(e.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("wavae: interrupted", file=sys.stderr)
        return 130
    except WavaeError as e:  # meant for the person at the terminal: no traceback
        print(f"wavae {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
