"""The embedded default target: a private Supabase-shaped PostgreSQL cluster (+ streaming replica)."""
