"""Data layer: shard format, corpus importers, synthetic corpus, streaming loader."""
