"""Collabora Online (coolwsd) on office nodes: coolwsd.xml and the export-to-PDF probe."""

from .service import SERVICE, CollaboraService

__all__ = ["SERVICE", "CollaboraService"]
