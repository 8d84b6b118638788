"""mnist-ops: train small CNNs on MNIST-format data and measure what each choice buys.

Importing this package (or any module in it) trains, loads and downloads nothing.
"""

__version__ = "0.1.0"
