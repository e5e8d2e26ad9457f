"""Tools around the pipeline: compare, profile, bench, fuzz, export, demo and trained samples."""
