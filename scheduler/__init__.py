"""APScheduler wiring: one BackgroundScheduler per server process, jobs persisted in Postgres; no business logic here."""
