"""Tests for runwasi_py._daemon."""
