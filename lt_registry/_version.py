"""The package version (one home: read by lt_registry.__version__, setup.cfg and run provenance)."""
__version__ = "0.1.0"
