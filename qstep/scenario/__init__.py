"""Scenarios: what a BPF program must do, written down in TOML and checked on kernels.

`model` holds the typed scenario, `toml_load` reads and validates a file (errors name
the file and line), `runner` checks a scenario in a guest, `report` writes the
human summary, JUnit XML and JSON.
"""
