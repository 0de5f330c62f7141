"""The root of wavae's exception hierarchy (torch-free, importable everywhere).

Every error meant for a person (a bad config key, a corrupt bundle, a missing
sound card) derives from ``WavaeError``; the CLI prints its message and exits 2
instead of showing a traceback.
"""


class WavaeError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


# The exit code of a command stopped by a WavaeError: the same as argparse's for a
# bad command line, since both mean "the input was wrong, here is why" (one line
# on stderr).  0 is success, 1 a health check that found something missing
# (`wavae panel check`), 130 an interrupt.
EXIT_BAD_INPUT = 2
