"""The playground's renders, in a process of their own at low priority.

``wavae web`` starts ``python -m wavae.device.web.worker`` for each job, gives
it one JSON object on stdin and reads one from stdout.  The worker lowers its
own priority first (``os.nice(NICE)``) and runs onnxruntime on one thread, so
a render on the instrument's board only takes CPU the audio loop leaves
(the live loop runs at realtime or normal priority, ahead of any niced
process).  The web process itself never loads numpy or onnxruntime: its
memory stays small and a crash in a render cannot take the page down.

Jobs::

    {"job": "analyze", "bundle": B, "wav": IN.wav, "path_out": A.npz}
    {"job": "render", "bundle": B, "source": SOURCE, "ops": [OP, ...],
     "path_out": R.npz, "wav_out": R.wav}

    SOURCE: {"kind": "path", "paths": [A.npz]}
            {"kind": "interpolate", "paths": [A.npz, B.npz], "length": N | null}
            {"kind": "plane", "paths": [A, B, C, D], "xy": [x, y] | [[t, x, y], ...]}
    OP:     ``wavae.device.latent.op_from_json``

The answer is ``{"path": ..., "spectrogram": ..., "seconds": ...}`` (see
``summary`` and ``spectrogram``) or ``{"error": message}``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from wavae.errors import WavaeError

from ..audio_file import AudioReader, write_wav_atomic
from ..bundle import load_bundle
from ..machine import memory_mib
from ..latent import LatentOpError, LatentPath, PathCodec, apply_ops, interpolate, load_path, op_from_json, plane, save_path

NICE = 10  # below the web server (0) and far below the audio loop (0 or SCHED_FIFO)
MAX_CURVE_POINTS = 800  # columns of the latent curves sent to the page
SPEC_BINS, SPEC_COLUMNS = 96, 480


def spectrogram(x: np.ndarray, rate: int, bins: int = SPEC_BINS, columns: int = SPEC_COLUMNS) -> dict[str, Any]:
    """A log-frequency, 80 dB spectrogram of mono ``x`` as bytes (column after column, low bins first)."""
    n_fft = 1 << max(8, int(np.ceil(np.log2(rate * 0.04))))  # ~40 ms windows
    hop = max(1, -(-max(x.size - n_fft, 1) // columns))
    pad = np.concatenate([x.astype(np.float32), np.zeros(n_fft, np.float32)])
    starts = np.arange(0, max(x.size, 1), hop)[:columns]
    frames = np.stack([pad[s:s + n_fft] for s in starts]) * np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = np.geomspace(40.0, rate / 2, bins + 1)  # log-spaced bands, 40 Hz to Nyquist
    band = np.clip(np.searchsorted(edges, freqs) - 1, 0, bins - 1)
    power = np.zeros((mag.shape[0], bins))
    count = np.bincount(band, minlength=bins)
    for b in range(bins):
        if count[b]:
            power[:, b] = (mag[:, band == b] ** 2).mean(axis=1)
        else:  # a band narrower than one FFT bin: the nearest bin
            power[:, b] = mag[:, min(int(np.searchsorted(freqs, edges[b])), mag.shape[1] - 1)] ** 2
    db = 10 * np.log10(power + 1e-12)
    top = db.max()
    level = np.clip((db - (top - 80.0)) / 80.0, 0.0, 1.0)
    data = np.round(level * 255).astype(np.uint8)
    return {"bins": bins, "columns": int(data.shape[0]), "seconds": x.size / rate,
            "low_hz": 40.0, "high_hz": rate / 2, "data": base64.b64encode(data.tobytes()).decode()}


def summary(path: LatentPath) -> dict[str, Any]:
    """A path as the page draws it: every dimension's curve, at most ``MAX_CURVE_POINTS`` columns."""
    step = max(1, -(-path.frames // MAX_CURVE_POINTS))
    return {
        "frames": path.frames,
        "seconds": path.seconds,
        "latent_dim": path.meta.latent_dim,
        "z": np.round(path.z[:, ::step].astype(np.float64), 3).tolist(),
        "loudness": np.round(path.loudness[::step].astype(np.float64), 3).tolist(),
    }


def source_path(source: Any) -> LatentPath:
    if not isinstance(source, dict) or source.get("kind") not in ("path", "interpolate", "plane"):
        raise LatentOpError("the source is a path, an interpolation (A->B) or the plane")
    files = source.get("paths")
    want = {"path": 1, "interpolate": 2, "plane": 4}[source["kind"]]
    if not isinstance(files, list) or len(files) != want:
        raise LatentOpError(f"a {source['kind']} source takes {want} sound(s)")
    paths = [load_path(f) for f in files]
    names = [Path(f).stem for f in files]
    if source["kind"] == "path":
        return paths[0]
    if source["kind"] == "interpolate":
        return interpolate(paths[0], paths[1], length=source.get("length"), names=names)
    xy = source.get("xy")
    if isinstance(xy, list) and len(xy) == 2 and all(isinstance(v, (int, float)) for v in xy):
        xy = (xy[0], xy[1])
    return plane(paths, xy, names=names)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    kind = job.get("job")
    bundle = load_bundle(job["bundle"], verify=False)  # checked in full when `wavae web` started
    if kind == "analyze":
        with PathCodec(bundle) as codec:
            path = codec.encode_file(job["wav"])
        save_path(job["path_out"], path)
        with AudioReader(job["wav"], rates=None) as r:
            x = r.read(r.frames).mean(axis=1)
            rate = r.rate
        return {"path": summary(path), "spectrogram": spectrogram(x, rate)}
    if kind == "render":
        path = source_path(job.get("source"))
        ops = job.get("ops") or []
        if not isinstance(ops, list):
            raise LatentOpError("ops is a list of operators")
        path = apply_ops(path, [op_from_json(o) for o in ops])
        save_path(job["path_out"], path)
        with PathCodec(bundle) as codec:
            audio = codec.decode(path)
        peak = float(np.abs(audio).max())
        write_wav_atomic(job["wav_out"], audio.reshape(-1, 1), bundle.sample_rate, subtype="PCM_16")
        return {"path": summary(path), "spectrogram": spectrogram(audio, bundle.sample_rate),
                "seconds": audio.size / bundle.sample_rate, "peak": peak}
    raise LatentOpError(f"unknown job {kind!r}")


def main() -> int:
    try:
        os.nice(NICE)
    except OSError:
        pass  # already lower (a nice value is capped at 19)
    try:
        job = json.loads(sys.stdin.read())
        result = run_job(job)
    except WavaeError as e:
        result = {"error": str(e)}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        result = {"error": f"malformed job ({type(e).__name__}: {e})"}
    result["nice"] = os.nice(0)  # the priority it ran at, for the page and the tests
    result["worker_rss_peak_mib"] = memory_mib()["rss_peak_mib"]
    sys.stdout.write(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
