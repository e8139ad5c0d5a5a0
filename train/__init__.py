"""faceedge train stage."""
