"""Postgres cost mart: migrations, the gold -> mart loader, roles, reconciliation and the typed queries pages use."""
