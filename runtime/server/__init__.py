"""impasto's server: the Studio API over gRPC and HTTP/JSON, KServe v2, jobs run by the sidecar.

``app.py`` wires it together (``impasto serve``); ``studio.py`` holds the Studio logic both
transports call; ``jobs.py`` the queue and event logs; ``supervisor.py`` the sidecar process;
``models.py`` and ``batching.py`` the feed-forward models; ``kserve.py``, ``http.py`` the
protocols; ``auth.py``, ``metrics.py``, ``errors.py`` the cross-cutting parts.
"""
