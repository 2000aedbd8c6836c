"""swarmkeeper: GitOps for the hosts of a Docker Swarm cluster.

The package is layered (see docs/architecture.md): ``desired`` and ``plan`` are the pure core,
``actuators`` touch the world, the agent and the CLI sit on top.
"""

__version__ = "0.1.0"
