"""Data: sources (readers), the shard writer and manifest, the WebDataset loader."""
