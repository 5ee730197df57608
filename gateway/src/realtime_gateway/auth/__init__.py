"""Authentication (JWT verification) and authorization rules."""
