"""Emitter: integer IR -> C sources and report.json, rendered from templates/."""
