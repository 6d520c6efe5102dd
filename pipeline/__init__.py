"""rn50-pipeline: keep a ResNet50 v1.5 ImageNet classifier fresh, at NGC quality, every month.

The library never imports Airflow; `tasks/` and `dags/` adapt it to Airflow.
"""

__version__ = "0.1.0"
