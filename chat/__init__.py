"""Team chat: Zulip organisations (realms) provisioned from the tree's mailboxes."""
