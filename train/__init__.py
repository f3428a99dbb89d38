"""impasto.train: the brush engine, model definitions, data generators and training loops.

Imports neither impasto.export nor impasto.runtime.
"""
