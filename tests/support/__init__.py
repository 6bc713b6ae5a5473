"""Helpers shared by the tests (fixtures live in tests/conftest.py); tests import them as
`from tests.support.<module> import ...` and never import each other."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
