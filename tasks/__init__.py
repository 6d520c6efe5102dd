"""Thin adapters, one module per Airflow task; each also runs as `python -m tasks.<name>`."""
