"""Per-user queue of notifications and job offers kept while the user has no live socket."""
