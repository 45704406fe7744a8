"""shiftbench: large empirical studies of optimization and generalization under shift."""

__version__ = "0.1.0"
