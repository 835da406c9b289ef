"""Ensembles: members on bootstrap rows and/or random feature subsets, soft and hard voting.

Training is here; the trained ensemble (:class:`Ensemble`, read by ``descend
predict`` and ``descend serve``) lives in :mod:`descend.train.ensemble_model`.
"""

from descend.experiments.ensemble.members import EnsembleConfig, MemberPlan, member_seed, plan_members, train_members
from descend.experiments.ensemble.run import (EnsembleRun, dropout_comparison, error_by_size, evaluate_ensemble,
                                              run_ensemble)
from descend.train.ensemble_model import FORMAT, VOTES, Ensemble, Member, combine, load_ensemble

__all__ = ["FORMAT", "VOTES", "Ensemble", "EnsembleConfig", "EnsembleRun", "Member", "MemberPlan", "combine",
           "dropout_comparison", "error_by_size", "evaluate_ensemble", "load_ensemble", "member_seed", "plan_members", "run_ensemble",
           "train_members"]
