"""Tests for runwasi_py._proto."""
