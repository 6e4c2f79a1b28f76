"""The Song-compatible REST API: ``create_app(catalog)`` and ``serve(app, host, port)``."""
