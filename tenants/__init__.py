"""Virtual customers (a tree of any depth), their administrators, permissions and tokens."""
