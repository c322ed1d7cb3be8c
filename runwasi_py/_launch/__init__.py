"""The short-lived ``start``, ``delete`` and ``-info`` processes containerd runs (no asyncio)."""
