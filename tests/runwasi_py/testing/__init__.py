"""Tests for runwasi_py.testing."""
