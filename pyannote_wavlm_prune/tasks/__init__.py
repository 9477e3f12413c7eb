from .distill_prune import Distill, DistillPrune, Lagrangian

__all__ = ["Distill", "DistillPrune", "Lagrangian"]
