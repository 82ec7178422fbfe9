"""Compatibility shim for tools that still call ``setup.py``: the package's metadata, dependencies and
console scripts are declared in ``pyproject.toml`` (PEP 621); ``pip install .`` reads them from there."""
from setuptools import setup

setup()
