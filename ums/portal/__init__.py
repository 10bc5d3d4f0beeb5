"""Shared portal machinery: base views, the navigation, error pages, login."""
