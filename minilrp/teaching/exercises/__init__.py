"""Course exercises: skeletons, committed reference inputs/outputs, and the checker data."""
