"""One module per Airflow task: turn params into a `pipeline` call, return a small JSON summary.

Each module also runs as `python -m tasks.<name> --args`, so a GPU worker or a container can run a
stage with no scheduler around it. Airflow is imported only for its exceptions, and only when present.
"""
