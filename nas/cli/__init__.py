"""The command line: one module per command (``nas-show``, ``nas-train``, ``nas-bench``, ``nas-search``,
``nas-export``, ``nas-report``), each a thin layer over the library, and ``common`` for what they
share. Bad input is one line and exit 2."""
