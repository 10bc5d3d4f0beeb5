"""The demo installation: ``seed_demo``, ``demo_passwords`` and ``demo_nodes``.

Why it lives here: the demo touches every bounded context (customers and administrators,
mail, resource limits, two-factor policy, held-mail retention, servers, converge jobs and
the spam hold), and ``spamhold`` is the one app the layering of DESIGN.md lets import all
of them (``spamhold -> mail, servers, deploy``, and through them ``tenants``). A new
top-level app would need a settings change; this package adds nothing to the product's
runtime and nothing in the product imports it.

Everything is written through the product's own action functions, so the audit log, the
jobs and the limits a demo shows are the real ones.

* :mod:`.catalogue`: what the demo contains (plain data).
* :mod:`.seed`: creates it, idempotently; :mod:`.tree`, :mod:`.mailboxes`,
  :mod:`.policies` and :mod:`.csv_demo` each own one part.
* :mod:`.logins`: printing the demo administrators' logins and resetting them.
* :mod:`.nodes`: two real local mail nodes for ``make run DEMO_NODES=1``.
"""
