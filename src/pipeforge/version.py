"""pipeforge's version (kept in step with pyproject.toml by tests/test_setup_contract.py)."""

__version__ = "0.1.0"
