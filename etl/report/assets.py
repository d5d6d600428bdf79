"""The Airflow Asset each academy's sync DAG emits when it changed the directory.

Consumers (an ENT backend's cache refresh, a mail-account provisioning DAG...) schedule on it
without importing the sync's DAG file::

    from airflow.sdk import Asset, dag
    from etl.report.assets import directory_asset_name, directory_asset_uri

    @dag(schedule=[Asset(name=directory_asset_name("ac-reims"),
                         uri=directory_asset_uri("ac-reims"))])
    def refresh_ent_cache(): ...

Each event's ``extra`` says which sync run it was, how many changes it applied and to which
schools (UAIs and counts only). A run that applied nothing (quiet night, dry run, everything
held for approval) emits no event. Plain Python: this module never imports airflow.
"""

from __future__ import annotations


def directory_asset_name(academy: str) -> str:
    """``entsync_directory_<academy>``, e.g. ``entsync_directory_ac_reims``."""
    return "entsync_directory_" + academy.replace("-", "_")


def directory_asset_uri(academy: str) -> str:
    """``x-entsync://directory/<academy>`` (``x-``: a scheme of our own, kept as is)."""
    return f"x-entsync://directory/{academy}"
