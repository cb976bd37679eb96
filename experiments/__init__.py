"""Runnable studies: each module defines a frozen `Config` whose `setup()` the backbone trains."""
