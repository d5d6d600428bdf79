"""Development and test tools: the embedded slapd, the export generator, a local Airflow."""
