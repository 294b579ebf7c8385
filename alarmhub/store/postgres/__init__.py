"""PostgreSQL through asyncpg: the store for several instances and high availability."""
