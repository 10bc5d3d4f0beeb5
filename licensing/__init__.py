"""The product licence: who may run this installation, until when, for how much.

See :mod:`licensing.document` (the signed file), :mod:`licensing.state` (the installed
licence, re-verified on every read, and its use) and :mod:`licensing.enforce` (the one
check every billable create calls).
"""
