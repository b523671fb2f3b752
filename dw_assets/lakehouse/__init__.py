"""The lakehouse stage: landing files -> bronze -> silver (+ SCD2 history) as Delta tables, and their upkeep.

Entry points: `apply.apply_client`, `tables.ensure_client_tables`, `maintenance.maintain_lake`, `paths.read_delta`;
the order of changes is `ordering`, the migration of an older layout `migration.migrate_client`.
"""
