"""The pots' ADC: an MCP3008 (8 channels, 10 bits) on an SPI bus.

The boundary is ``SpiBus``: ``xfer2(list[int]) -> list[int]`` (spidev's own
method; ``close()``).  ``open_spidev`` opens the real one; tests use
``wavae.device.panel.fakes.FakeMcp3008``.

One conversion is three bytes, ``[0x01, 0x80 | ch << 4, 0x00]`` (start bit,
single-ended, channel); the answer is ``((rx[1] & 3) << 8) | rx[2]``.  The chip
drives a null bit (bit 2 of ``rx[1]``) low just before the data: a set null
bit means no MCP3008 answered (unwired MISO floats or is pulled high), which
``Mcp3008.read`` reports as a dead bus instead of a pot turned fully up.
"""

from __future__ import annotations

from typing import Protocol

from .gpio import PanelHardwareError


class SpiBus(Protocol):
    def xfer2(self, data: list[int]) -> list[int]: ...

    def close(self) -> None: ...


def open_spidev(bus: int, device: int, speed_hz: int) -> SpiBus:
    """``/dev/spidev<bus>.<device>`` in SPI mode 0 at ``speed_hz``."""
    try:
        import spidev
    except ImportError as e:
        raise PanelHardwareError(
            f"the spidev module is not installed ({e}): pip install 'wavae-edge[panel]'"
        ) from None
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
        spi.mode = 0
        spi.max_speed_hz = speed_hz
    except OSError as e:
        spi.close()
        raise PanelHardwareError(
            f"cannot open /dev/spidev{bus}.{device}: {e.strerror or e}. Enable SPI (Pi: dtparam=spi=on in "
            f"config.txt; Jetson: jetson-io), and put the service user in the spi group"
        ) from None
    return spi


class Mcp3008:
    def __init__(self, bus: SpiBus, name: str = "MCP3008"):
        self.bus, self.name = bus, name
        self._xfer = bus.xfer2
        self._cmds = [(0x01, 0x80 | (ch << 4), 0x00) for ch in range(8)]  # spidev copies its argument

    def read(self, channel: int) -> int:
        try:
            rx = self._xfer(list(self._cmds[channel]))
        except OSError as e:
            raise PanelHardwareError(f"{self.name}: SPI transfer failed: {e}") from None
        if len(rx) != 3 or rx[1] & 0x04:
            raise PanelHardwareError(
                f"{self.name}: no answer on the SPI bus (got {list(rx)}): check the wiring of MISO, CS and power"
            )
        return ((rx[1] & 3) << 8) | rx[2]

    def close(self) -> None:
        self.bus.close()
