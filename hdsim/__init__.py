"""hdsim: block-code factorizers from float reference to fixed point, IMC noise and RTL."""

__version__ = "0.1.0"
