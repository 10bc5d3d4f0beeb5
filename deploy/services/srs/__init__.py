"""Sender Rewriting Scheme on SMTP nodes (postsrsd), so forwards to other providers keep
passing SPF. See :mod:`deploy.services.srs.service`."""

from .service import SERVICE, SrsService, enabled, postfix_params

__all__ = ["SERVICE", "SrsService", "enabled", "postfix_params"]
