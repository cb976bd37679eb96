"""The metalearn test suite (a package, so test modules can share small fixtures)."""
