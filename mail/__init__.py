"""Mail domains, mailboxes, aliases, auto-responders, sieve filters and filtering policy."""
