"""The project's data files (``schemas/``): in the checkout, or shipped in the wheel.

``pip wheel .`` copies the checkout's ``schemas/`` into the package as ``etl/_schemas``
(``pyproject.toml``), so validation's suites and the embedded slapd's schema and config
template are found the same way from a checkout, an editable install or a worker image.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def schemas_dir() -> Path:
    """The installed copy (``etl/_schemas``) when there is one, else the checkout's."""
    shipped = _HERE / "_schemas"
    return shipped if shipped.is_dir() else _HERE.parent / "schemas"
