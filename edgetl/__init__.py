"""edgetl: from a folder of labelled photos to a measured image classifier on an edge device.

The package root imports nothing heavy: `edgetl --help`, the device runtime and the
deploy tools must start without torch.
"""

__version__ = "0.1.0"
