"""The search-space files: YAML, one per space, named by ``nas-search --space NAME``. This folder is
installed as the package ``nas.space.spaces`` (pyproject.toml's ``package-dir``), so a wheel and an
editable install read the same files."""
