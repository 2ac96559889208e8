"""Example entry scripts in the shapes users already deploy (used by the tests and the docs)."""
