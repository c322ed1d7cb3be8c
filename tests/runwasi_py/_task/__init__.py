"""Tests for runwasi_py._task."""
