"""Small samples shipped for the quickstart (copied from the public data sets)."""
