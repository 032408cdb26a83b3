"""What the benchmark's files share: a leaf, so they import each other without a circle."""

MESSAGE = "handled request %d: 200 OK in the benchmark loop"
BATCH = 5000  # WriterOptions.max_batch_lines' default: what one PUT carries in a burst
