"""Keras models: built from a spec (its backbone included), and loaded back from a run."""
