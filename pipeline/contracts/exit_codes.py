"""The exit codes of `rn50`, which the Airflow tasks read back from the processes they run.

A child's exit code is the only thing a task reads to choose between a final failure and a retry
(tasks.train): never its stderr.
"""

OK = 0
FAILED = 1  # the work ran and failed on its input (a gate, a record it cannot read): a retry fails the same
USAGE = 2  # bad arguments, or input refused before any work started: a retry fails the same
# A failure a retry may not meet (the object store down, a lost rank): BSD's EX_TEMPFAIL.
RETRY = 75
INTERRUPTED = 130  # Ctrl-C; stopped by signal N is 128 + N

FINAL = frozenset({FAILED, USAGE})  # what a task never retries
