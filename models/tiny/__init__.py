"""Linea's in-house tiny model: its procedural world, evaluator, recipe and shipped folder."""
