"""Tests for runwasi_py._events."""
