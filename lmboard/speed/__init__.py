"""Token rate: exact-work timing of local models (local.py) and streaming load on endpoints (endpoint.py)."""
