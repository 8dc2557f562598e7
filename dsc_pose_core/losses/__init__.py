"""Training losses, one module per paper; each term cites its equation."""
