"""A whole cluster on one machine: ``swarmkeeper sandbox up|down|reboot`` (see docs/sandbox.md).

Nodes are copy-on-write overlays of a cached Debian root (the stand-in for Flatcar) that the
real Ignition provisions from ``swarmkeeper cloudconfig``'s output, booted with
``systemd-nspawn --boot`` in network namespaces of their own. ``spec`` is the pure plan of a
sandbox (names, addresses, params, state tree, cluster.json); ``host``, ``node``, ``images``
and ``forward`` touch the machine; ``cluster`` strings them together.

Nothing in the agent imports this package: it is operator and test tooling.
"""
