"""The one error the image builder raises: :class:`ImageError`."""

from __future__ import annotations

__all__ = ["ImageError"]


class ImageError(Exception):
    """The image cannot be built or imported; the message says why and what to fix.

    Example:
        >>> try:
        ...     build_image("missing.wasm", "app:1", "app.tar")
        ... except ImageError as e:
        ...     print(e)
        input 'missing.wasm' does not exist
    """
