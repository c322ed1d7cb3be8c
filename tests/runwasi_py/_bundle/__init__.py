"""Tests for runwasi_py._bundle."""
