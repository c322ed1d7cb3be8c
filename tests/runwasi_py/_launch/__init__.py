"""Tests for runwasi_py._launch."""
