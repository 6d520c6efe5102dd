"""Package data: the 1000 ILSVRC-2012 synsets and their names (public reference lists)."""
