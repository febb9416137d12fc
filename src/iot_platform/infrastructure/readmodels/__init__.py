"""SQL read models: their projections (event -> rows) and their queries (rows -> views)."""
