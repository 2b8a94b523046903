"""Read-only measurements: one server-side SQL call each, returning a pydantic model."""
