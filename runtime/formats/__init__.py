"""File formats for paintings: stroke lists (JSON, npz), SVG, animations."""
