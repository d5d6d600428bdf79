"""Reports: the run page, entsync status, metrics, the change feed, Airflow asset names."""
