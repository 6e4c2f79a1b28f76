"""The songlake application: the command line and ``serve``, the one place that wires the core
(``catalog``), the API (``api``) and the watcher (``watcher``) together. Nothing imports it."""
