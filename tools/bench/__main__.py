"""`python -m tools.bench` (from the clone's root): the same as tools/bench.py."""

from tools.bench import cli

cli.main()
