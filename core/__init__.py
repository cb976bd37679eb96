"""The ground floor: errors, typed `key=value` parsing and atomic files. Imports nothing of
metalearn's, so every other floor may import it."""
