"""Backups: targets (S3, CIFS, NFS) with client-side encryption, and mail store snapshots."""
