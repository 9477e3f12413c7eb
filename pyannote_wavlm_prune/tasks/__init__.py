from .distill_prune import Distill, DistillPrune, Lagrangian, StopAtTargetSparsity

__all__ = ["Distill", "DistillPrune", "Lagrangian", "StopAtTargetSparsity"]
