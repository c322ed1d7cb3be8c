"""Protobuf for the shim: stdlib wire primitives, message re-exports, generated code.

Importing this package imports nothing: ``start`` uses :mod:`runwasi_py._proto.wire` without
paying for betterproto2.
"""
