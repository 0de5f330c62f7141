"""What this device software serves: backend names and audio rates.

Plain constants with no imports, so that the config reader, the web page's
process and ``wavae status`` can check against them without loading numpy or
onnxruntime; the engine and the backends use the same names.
"""

from __future__ import annotations

BACKENDS = ("onnxruntime", "tensorrt")  # the one list of backend names: configs, CLIs and make_backend
DEVICE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)  # device (ALSA) rates
MODEL_RATE_RANGE = (8000, 96000)  # the sample rates a bundle may run at
MAX_RATE_RATIO = 6.0  # the furthest apart the device and model rates may be (resampling)
