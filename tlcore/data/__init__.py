"""Images in: dataset folders and zips, safe decoding, splits, spilling to disk, batches."""
