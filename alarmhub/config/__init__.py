"""Files → frozen core types: the rules file, device profiles, per-device settings.

Parsing and validation live here; the types they produce live in `alarmhub.core`,
so the core never reads a file. (The repository's top-level `config/` directory
holds the TOML files themselves.)
"""
