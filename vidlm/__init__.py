"""vidlm package."""
