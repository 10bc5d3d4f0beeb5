"""Nextcloud provisioning over ``occ`` (see :mod:`.service`) and its OCS client (:mod:`.ocs`)."""

from .service import SERVICE, NextcloudService

__all__ = ["SERVICE", "NextcloudService"]
