"""The on-device runtime. It never imports torch (tests/test_torch_free.py enforces it).

Preprocessing (`preprocess.Preprocess`) and image decoding (`images.load_rgb`) are
defined here once and shared by training-time evaluation, parity and the device.
"""
