"""The wire API: modules generated from ``proto/`` (do not edit them; run ``python proto/generate.py``)
and the conversions between its messages and impasto's tensors and options (``convert``)."""
