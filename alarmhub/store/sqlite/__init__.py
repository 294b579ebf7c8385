"""Everything that speaks SQLite: the store, its row mappers, schema and migrations."""

from alarmhub.store.sqlite.binding import register as _register_binding

# Process-wide, once: None and the model's enums bound without the adapter lookups
# (binding.py; issue 18). Here because every SQLite path imports this package.
_register_binding()
