"""impasto.train.loops"""
