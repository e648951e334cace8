"""l3net: a pure-L3 container network in the spirit of Project Calico."""

__version__ = "0.1.0"
