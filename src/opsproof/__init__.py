"""opsproof: operate and prove a Supabase-backed autonomous TMS."""

__version__ = "0.1.0"
