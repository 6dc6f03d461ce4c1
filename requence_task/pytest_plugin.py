"""pytest plugin: the ``requence_local`` fixture (being written)."""
