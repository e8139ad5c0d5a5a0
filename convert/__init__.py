"""faceedge convert stage."""
