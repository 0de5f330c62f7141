"""The root of wavae's exception hierarchy (torch-free, importable everywhere).

Every error meant for a person (a bad config key, a corrupt bundle, a missing
sound card) derives from ``WavaeError``; the CLI prints its message and exits 1
instead of showing a traceback.
"""


class WavaeError(Exception):
    """An error whose message tells the user what is wrong and what to do."""
