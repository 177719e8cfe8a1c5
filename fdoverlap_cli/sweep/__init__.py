"""fdoverlap sweep: comparisons over a grid of batch sizes and options (grid, record, run)."""
