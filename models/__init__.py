"""The trained models wavae-edge ships (data only: see each folder's MODEL_CARD.md).

Installed as the package ``wavae.models`` so that a device venv carries the
bundles; ``wavae.device.shipped`` finds them.  Written by ``wavae ship``.
"""
