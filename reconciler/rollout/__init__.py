"""Safe rollout: the pure decision (``decide``) and its etcd-bound gate (control layer)."""

from reconciler.rollout.decide import Decision, RolloutView, Verdict, decide, view_from_kvs
from reconciler.rollout.gate import RolloutGate, Slot

__all__ = ["Decision", "RolloutGate", "RolloutView", "Slot", "Verdict", "decide", "view_from_kvs"]
