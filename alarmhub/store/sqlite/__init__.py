"""Everything that speaks SQLite: the store, its row mappers, schema and migrations."""
