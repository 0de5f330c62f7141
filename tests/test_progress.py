"""Progress: a bar on a terminal, a plain line every few seconds elsewhere."""

from __future__ import annotations

import io

from wavae.progress import Progress, track


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_log_gets_plain_periodic_lines_without_carriage_returns():
    out, clock = io.StringIO(), Clock()
    with Progress(1000, "train vae", "step", stream=out, every_s=10.0, clock=clock) as bar:
        for i in range(1000):
            clock.t = (i + 1) / 10  # 10 steps per second: 100 s in all
            bar.update(1)
            bar.set_postfix({"kl": 0.0312})
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # one line per 10 s of work plus the closing one, not one per update
    assert 9 <= len(lines) <= 11, lines
    assert lines[0].startswith("train vae: 100/1000 step (10%), 10 step/s, 90 s left, kl=0.0312")
    assert lines[-1].startswith("train vae: 1000/1000 step (100%)")


def test_a_terminal_gets_a_bar():
    out = io.StringIO()
    with Progress(50, "export", "step", stream=out, terminal=True) as bar:
        bar.update(50)
    assert "\r" in out.getvalue()  # tqdm redraws in place


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    assert list(track(range(5), "x", stream=out, enabled=False)) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""


def test_without_a_total_the_line_counts_and_times():
    out, clock = io.StringIO(), Clock()
    bar = Progress(None, "decoding", "file", stream=out, every_s=1.0, clock=clock)
    clock.t = 2.0
    bar.update(3)
    assert out.getvalue().strip() == "decoding: 3 file, 1.5 file/s"
    bar.close()
    bar.close()  # idempotent
    assert len(out.getvalue().splitlines()) == 2
