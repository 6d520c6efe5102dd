"""The stages: each reads the folders of the stages before it and writes its own, and this is the one floor
where the registry, training and data meet (the champion, the live baseline, the drift reference, the
lineage that lets a run skip, the files that make a version). `rn50` and the Airflow tasks call these.
"""
