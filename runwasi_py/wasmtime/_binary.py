"""What kind of program an entrypoint file holds, from its first bytes (no wasmtime import)."""

from __future__ import annotations

import enum

__all__ = ["BinaryKind", "detect"]

_WASM_MAGIC = b"\0asm"
_MODULE_VERSION = b"\x01\x00\x00\x00"
_COMPONENT_LAYER = b"\x0d\x00\x01\x00"  # component-model version 0xd, layer 1
_ELF_MAGIC = b"\x7fELF"
# wasmtime marks its serialized modules and components with its own ELF OS ABI byte
# (e_ident[EI_OSABI] = 200), which sets them apart from any native executable.
_ELFOSABI_WASMTIME = 0xC8


class BinaryKind(enum.Enum):
    """The kinds of entrypoint the wasmtime engine runs."""

    MODULE = "core wasm module"
    COMPONENT = "wasm component"
    PRECOMPILED = "wasmtime precompiled artifact"
    WAT = "WebAssembly text"


def detect(head: bytes) -> BinaryKind | None:
    """Classify a file by its first bytes (4 KiB is plenty); None if it is none of them.

    >>> detect(b"\\0asm\\x01\\x00\\x00\\x00")
    <BinaryKind.MODULE: 'core wasm module'>
    >>> detect(b"#!/bin/sh\\n") is None
    True
    """
    if head.startswith(_WASM_MAGIC):
        version = head[4:8]
        if version == _MODULE_VERSION:
            return BinaryKind.MODULE
        if version == _COMPONENT_LAYER:
            return BinaryKind.COMPONENT
        return None
    if head.startswith(_ELF_MAGIC):
        return BinaryKind.PRECOMPILED if head[7:8] == bytes([_ELFOSABI_WASMTIME]) else None
    if _looks_like_wat(head):
        return BinaryKind.WAT
    return None


def describe(head: bytes) -> str:
    """A short human description of a file that :func:`detect` refused, for error messages."""
    if head.startswith(_WASM_MAGIC):
        return f"a wasm binary of unsupported version {head[4:8].hex(' ')}"
    if head.startswith(_ELF_MAGIC):
        return "a native ELF executable, not a wasmtime artifact"
    if head.startswith(b"#!"):
        return "a script"
    if not head:
        return "an empty file"
    return "neither wasm nor WebAssembly text"


def _looks_like_wat(head: bytes) -> bool:
    """Text whose first token, after blanks and comments, is ``(``."""
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sample may end inside a multi-byte character.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith(";;", i):
            nl = text.find("\n", i)
            if nl < 0:
                return False
            i = nl + 1
        elif text.startswith("(;", i):
            end = text.find(";)", i + 2)
            if end < 0:
                return False
            i = end + 2
        else:
            return c == "("
    return False
