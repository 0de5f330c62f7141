"""Draw docs/panel-wiring.png: the 40-pin header with the panel's functions, from the example mappings.

    .venv/bin/python docs/panel_wiring.py

The pin assignments are read from device/configs/panels/*.toml (the comments
there name each line's pin), so the picture cannot drift from the mappings.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PANELS = ROOT / "device" / "configs" / "panels"
OUT = ROOT / "docs" / "panel-wiring.png"

POWER = {1: "3V3", 2: "5V", 4: "5V", 6: "GND", 9: "GND", 14: "GND", 17: "3V3", 20: "GND", 25: "GND", 30: "GND",
         34: "GND", 39: "GND"}
SPI = {19: "MOSI", 21: "MISO", 23: "SCLK", 24: "CE0"}
COLOURS = {"encoder": "#1f77b4", "button": "#2ca02c", "led": "#d62728", "spi": "#9467bd", "power": "#7f7f7f"}


def pins_from_mapping(path: Path) -> dict[int, tuple[str, str]]:
    """pin -> (kind, label) from a mapping file's `line = "..."  # pin N` comments."""
    pins: dict[int, tuple[str, str]] = {}
    kind, label = "", ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[[encoder]]"):
            kind = "encoder"
        elif line.startswith("[[button]]"):
            kind = "button"
        elif line.startswith("[led]"):
            kind, label = "led", "LED"
        elif line.startswith("[") and not line.startswith("[["):
            kind = ""
        m = re.match(r'label = "([^"]+)"', line)
        if m:
            label = m.group(1)
        m = re.match(r'(a|b|push|line) = "([^"]+)"\s+# pin (\d+)', line)
        if m and kind:
            role = {"a": " A", "b": " B", "push": " push", "line": ""}[m.group(1)]
            pins[int(m.group(3))] = (kind, f"{label}{role} ({m.group(2)})")
    return pins


def draw(ax, title: str, pins: dict[int, tuple[str, str]]) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlim(-7.5, 8.5)
    ax.set_ylim(21, -1)
    ax.axis("off")
    ax.add_patch(plt.Rectangle((-0.6, -0.4), 2.2, 20.8, fill=False, lw=1.5))
    for pin in range(1, 41):
        row, col = (pin - 1) // 2, (pin - 1) % 2
        x = col * 1.0
        if pin in pins:
            kind, text = pins[pin]
        elif pin in SPI:
            kind, text = "spi", f"MCP3008 {SPI[pin]}"
        elif pin in POWER:
            kind, text = "power", POWER[pin]
        else:
            kind, text = "", ""
        colour = COLOURS.get(kind, "#dddddd")
        ax.add_patch(plt.Circle((x + 0.0, row), 0.32, color=colour))
        ax.text(x, row, str(pin), ha="center", va="center", fontsize=6, color="white" if kind else "black")
        if text:
            if col == 0:
                ax.text(-0.6 - 0.2, row, text, ha="right", va="center", fontsize=7, color=colour)
            else:
                ax.text(1.6 + 0.2, row, text, ha="left", va="center", fontsize=7, color=colour)


def main() -> None:
    boards = [("Raspberry Pi 4 / Pi 5 (GPIOn)", PANELS / "pi5.toml"),
              ("Jetson Orin Nano (tegra234-gpio)", PANELS / "jetson-orin-nano.toml")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 8))
    for ax, (title, path) in zip(axes, boards):
        draw(ax, title, pins_from_mapping(path))
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    fig.suptitle("wavae panel: 40-pin header, pin 1 top left (switches to GND; MCP3008 VDD/VREF to 3V3)",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
