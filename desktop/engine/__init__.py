"""Qt-free generation engine: discovery, loading, samplers, previews, metadata, gallery.

Nothing in this package may import PySide6 (an import-linter contract enforces it), so the
engine runs headless and can sit behind any front end.
"""
