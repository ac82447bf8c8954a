"""mflows: manifold-learning flows for simultaneous manifold learning and density estimation.

References:
    Flows for simultaneous manifold learning and density estimation.
    J. Brehmer and K. Cranmer, NeurIPS 2020, arXiv:2003.13913.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
