"""One module per Airflow task: turn params into a `pipeline` call, return a small JSON summary.

Import-only adapters: what runs a stage without a scheduler (a GPU worker, an MPIJob's launcher, a
container) is the `rn50` CLI (pipeline/cli/). Airflow is imported only for its exceptions and hooks,
and only when present.
"""
