"""Batch runs: a job spec expands into numbered tasks run locally, on Ray, on a farm, or on a server.

``spec.py`` (the TOML/JSON spec and its tasks), ``runner.py`` (one worker's runner,
records, resume), ``pool.py`` (local processes), ``ray_data.py`` (Ray Data actors). The
farm adapters (OpenJD for AWS Deadline Cloud, Flamenco) live in ``addons/farm/`` and call
``impasto batch SPEC --items A-B``.
"""
