"""``lelog recover``'s rules: whose a stream is, which stored log stands, which rows are read."""
