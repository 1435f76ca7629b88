"""Attune's training engine (no Django inside): `python -m training.engine SPEC.json [--resume]`.

Placeholder docstring; the protocol is documented once the engine settles.
"""
