"""wavae-edge: the wavae continuous model as streaming software for edge hardware."""

__version__ = "0.1.0"
