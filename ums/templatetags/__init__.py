"""Template tags and filters shared by every portal template."""
