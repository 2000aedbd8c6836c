"""Docker Swarm membership (control layer over the pure ``swarm.plan`` decisions)."""

from reconciler.swarm.agent import SwarmLink
from reconciler.swarm.membership import Membership, MembershipStatus, run_membership

__all__ = ["Membership", "MembershipStatus", "SwarmLink", "run_membership"]
