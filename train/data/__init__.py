"""impasto.train.data"""
