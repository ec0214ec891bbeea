"""Integration tests: a real Docker engine, real files, real HTTP (no mocks of the engine)."""
