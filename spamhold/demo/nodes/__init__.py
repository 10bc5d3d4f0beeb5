"""Two real local mail nodes for ``make run DEMO_NODES=1`` (``manage.py demo_nodes``).

Demo-only code that imports the test suite's node harness (``tests.harness``) and a few
of its helpers: the nodes are exactly the namespaced sshd nodes the suite converges, with
the same private paths, stand-ins for ``reboot``/``service`` (a demo node must never
reboot the machine it runs on) and local ClamAV signatures. The product never imports
this package.

* :mod:`.keeper`: the detached process that owns the harness cluster while the demo runs;
* :mod:`.state`: where the demo keeps what ``down`` needs (``var/demo-nodes/``);
* :mod:`.requirements`: what must be installed, and the message when it is not;
* :mod:`.enrol`: ``bootstrapcore.sh`` on each node against a temporary portal, approval;
* :mod:`.mailflow`: a little mail, one message the content filter holds, ingestion;
* :mod:`.lifecycle`: ``up`` and ``down``.
"""
