"""The plugin author's kit: `scaffold` writes a new plugin (`pipeforge new-plugin`), `check`
tests an installed one against the contract (`pipeforge check-plugin`), and `pytest_plugin`
gives plugin tests their fixtures (`pipeforge_run`, `build_component`, `tiny_context`).

Nothing here is imported by the rest of pipeforge, and importing this package imports no
torch: pytest loads `pytest_plugin` in every session of an environment that has pipeforge.
"""
