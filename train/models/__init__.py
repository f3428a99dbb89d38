"""impasto.train.models"""
