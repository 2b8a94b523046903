"""The reference ops plane: the real processes the drills and acceptance act on (see docs/plane.md)."""
