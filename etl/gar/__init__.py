"""The GAR export: the academy's directory as the national resource broker (GAR) receives it."""

from etl.gar.export import export_academy

__all__ = ["export_academy"]
