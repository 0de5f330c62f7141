"""``python -m wavae`` (and ``torchrun -m wavae train ...`` for DDP)."""

import sys

from wavae.cli import main

sys.exit(main())
