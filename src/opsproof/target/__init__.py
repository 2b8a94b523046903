"""The one door to the system under test: Postgres (db), Supabase REST (rest), HTTP (http)."""
