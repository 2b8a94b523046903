"""Thin: the opsproof pytest plugin (entry point) does the work; the suite fixtures live in fixtures/."""

pytest_plugins = ["fixtures.target", "fixtures.levers"]
