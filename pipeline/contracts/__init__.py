"""The contracts between stages: every artifact's name, the schemas of the JSON records stages hand each
other, the registry's names and the exit codes.

A name or a schema is defined here once, never by the stage that writes it or the one that reads it, so
neither has to import the other. This package imports nothing else of the project (import-linter checks it,
see docs/architecture.md): any floor may use it.
"""
