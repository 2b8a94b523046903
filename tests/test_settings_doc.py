""".env.example names every setting the suite and the plane read (and holds no real secret)."""

from __future__ import annotations

import re
from pathlib import Path

from opsproof.config import Settings
from opsproof.plane.settings import PlaneSettings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def test_every_setting_is_in_env_example():
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE.read_text(), re.M))
    aliases = {f.alias for model in (Settings, PlaneSettings) for f in model.model_fields.values() if f.alias}
    assert aliases - names == set()


def test_env_example_holds_no_real_secret():
    for line in EXAMPLE.read_text().splitlines():
        if re.match(r"^[A-Z_]*(KEY|SECRET|PASSWORD|TOKEN)[A-Z_]*=", line):
            value = line.split("=", 1)[1]
            assert value == "" or value.startswith("<"), line
