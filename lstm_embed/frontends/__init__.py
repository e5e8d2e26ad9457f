"""Frontends: a model file -> the float IR, one subpackage per file format; no ML framework
imported."""
