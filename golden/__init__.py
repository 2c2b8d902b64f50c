"""Bit-exact NumPy reference models: the specification every RTL unit is checked against."""
