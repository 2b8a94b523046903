"""Levers: the only code that writes to the target (flag overrides with leases, the drill lock, replica
replay pause/resume, incident and cadence levers). Every write is audited through ops.audit(...)."""
