"""A trained ensemble as read from (and written to) one safetensors file: members, soft and hard voting
(a regression ensemble: the mean of its members' values).

All members are saved in ONE file (``member{i}/...`` tensors, each member's
column indices as an integer tensor, spec / classes / normalisation in the
JSON metadata), read back by :meth:`Ensemble.load` without pickle.  Training
an ensemble is ``descend.experiments.ensemble``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from descend.backend import numpy_ops
from descend.errors import ConfigError, InputError, require
from descend.model import MLP, predict_logits
from descend.train.inference import inference_rows, mc_dropout_proba, softmax

VOTES = ("soft", "hard")
FORMAT = "descend-ensemble"


def _mc_seed(seed: int, member: int, start: int) -> int:
    """The Monte-Carlo dropout seed of one member's rows from ``start`` on: members draw different masks."""
    return int(np.random.SeedSequence([int(seed), int(member), int(start)]).generate_state(1)[0] >> 1)


@dataclass(eq=False)
class Member:
    """One trained network and the input columns it reads."""

    params: dict
    state: dict
    features: np.ndarray
    seed: int = 0
    info: dict = field(default_factory=dict)


def combine(member_proba: np.ndarray, vote: str = "soft") -> np.ndarray:
    """Combine ``(members, rows, classes)`` probabilities into ``(rows, classes)``.

    ``soft``: the mean probability.  ``hard``: the vote share, with half a vote
    spread by the mean probability, ``(votes + mean/2) / (members + 1/2)``: the
    half vote never outweighs a real one, it only breaks ties (towards the tied
    class with the highest mean probability), so ``argmax`` is the majority vote.
    """
    require(vote in VOTES, "vote", f"one of {VOTES}", vote)
    member_proba = np.asarray(member_proba, dtype=np.float64)
    mean = member_proba.mean(axis=0)
    if vote == "soft":
        return mean
    m, n, _ = member_proba.shape
    votes = np.zeros(mean.shape)
    for p in member_proba:
        votes[np.arange(n), np.argmax(p, axis=1)] += 1
    return (votes + mean / 2) / (m + 0.5)


@dataclass(eq=False)
class Ensemble:
    """Trained members, the shared normalisation and the class names.

    Inputs are raw rows (as in the dataset file): the normaliser fitted on the
    training rows is applied, then each member reads its own columns.  A
    regression ensemble (``spec.task == "regression"``) has the targets'
    standardization in ``target_scaler`` and their names in
    ``metadata["targets"]``; it predicts the mean of its members' values.
    """

    spec: MLP
    members: list[Member]
    classes: tuple[str, ...]
    n_features: int
    normalizer: object
    vote: str = "soft"
    metadata: dict = field(default_factory=dict)
    target_scaler: object = None

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("targets", ()))

    def _normalized(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            shape = "x".join(map(str, X.shape))
            raise InputError(f"input has shape {shape}; the ensemble expects rows of {self.n_features} features")
        return self.normalizer.transform(X)

    def member_proba(self, X, *, normalized: bool = False, batch_size: int | None = None, mc_samples: int = 0,
                     seed: int = 0) -> np.ndarray:
        """``(members, rows, classes)`` probabilities.

        Dropout members use the weight-scaling rule, or with ``mc_samples=K > 0``
        the mean of K Monte-Carlo dropout passes (masks seeded by ``seed`` and
        the member's own seed, so members draw different masks).
        """
        if self.task == "regression":
            raise ConfigError("this ensemble is a regression ensemble: it predicts values (predict_values), "
                              "not class probabilities")
        if mc_samples > 0 and self.spec.uses_dropout:
            def proba(m, xb, s):
                return mc_dropout_proba(self.spec, m.params, m.state, xb, samples=mc_samples,
                                        seed=_mc_seed(seed, m.seed, s))
        else:
            def proba(m, xb, s):
                return softmax(predict_logits(numpy_ops, self.spec, m.params, m.state, xb))
        return self._per_member(X, normalized, batch_size, len(self.classes), proba)

    def member_values(self, X, *, normalized: bool = False, batch_size: int | None = None) -> np.ndarray:
        """A regression ensemble's ``(members, rows, targets)`` predictions, in the targets' units."""
        if self.task != "regression":
            raise ConfigError("this ensemble classifies; its predictions are labels and probabilities, not values")
        def values(m, xb, s):
            return self.target_scaler.inverse(predict_logits(numpy_ops, self.spec, m.params, m.state, xb))

        return self._per_member(X, normalized, batch_size, len(self.targets), values)

    def _per_member(self, X, normalized: bool, batch_size: int | None, width: int, outputs) -> np.ndarray:
        """``(members, rows, width)``: ``outputs(member, rows, first row)`` on each member's columns of the rows,
        ``batch_size`` rows at a time."""
        x = np.asarray(X, dtype=np.float32) if normalized else self._normalized(X)
        out = np.empty((len(self.members), len(x), width))
        batch_size = batch_size or inference_rows(self.spec)
        for i, m in enumerate(self.members):
            dtype = m.params["dense0.W"].dtype
            for s in range(0, len(x), batch_size):
                xb = x[s:s + batch_size][:, m.features].astype(dtype, copy=False)
                out[i, s:s + batch_size] = outputs(m, xb, s)
        return out

    def predict_values(self, X, *, normalized: bool = False) -> np.ndarray:
        """A regression ensemble's ``(rows, targets)`` predictions: the mean of its members' values."""
        return self.member_values(X, normalized=normalized).mean(axis=0)

    def predict_proba(self, X, *, vote: str | None = None, normalized: bool = False, mc_samples: int = 0,
                      seed: int = 0) -> np.ndarray:
        """Soft vote: mean probability; hard vote: the fraction of members voting for each class."""
        return combine(self.member_proba(X, normalized=normalized, mc_samples=mc_samples, seed=seed),
                       vote or self.vote)

    def predict(self, X, *, vote: str | None = None, normalized: bool = False) -> np.ndarray:
        """Class indices (``classes[i]`` is the label)."""
        return np.argmax(self.predict_proba(X, vote=vote, normalized=normalized), axis=1)

    def save(self, path) -> Path:
        """All members in ONE safetensors file; JSON metadata, no pickle."""
        from descend.io.modelfile import save_model, spec_format_version

        params, state, extra = {}, {}, {}
        for i, m in enumerate(self.members):
            params.update({f"member{i}/{k}": v for k, v in m.params.items()})
            state.update({f"member{i}/{k}": v for k, v in m.state.items()})
            extra[f"member{i}/features"] = np.asarray(m.features, dtype=np.int64)
        norm_meta, norm_arrays = self.normalizer.to_dict()
        extra.update({f"normalization.{k}": v for k, v in norm_arrays.items()})
        if self.target_scaler is not None:
            extra.update({f"targets.{k}": v for k, v in self.target_scaler.arrays().items()})
        meta = dict(self.metadata)
        meta.update({
            "kind": FORMAT,
            "ensemble": {"members": len(self.members), "spec": self.spec.to_dict(), "vote": self.vote,
                         "seeds": [m.seed for m in self.members],
                         "member_info": [m.info for m in self.members]},
            "classes": list(self.classes), "n_features": int(self.n_features), "normalization": norm_meta})
        return save_model(path, params, state=state, extra_arrays=extra, metadata=meta,
                          format_version=spec_format_version(meta["ensemble"]["spec"]))

    @classmethod
    def load(cls, path) -> Ensemble:
        """Read a file written by :meth:`save`; a file that is not one raises InputError naming it."""
        from descend.io.modelfile import load_model

        return cls.from_model_file(load_model(path), path)

    @classmethod
    def from_model_file(cls, mf, path) -> Ensemble:
        """The ensemble held by an already-read model file ``mf`` (read from ``path``, named in errors)."""
        from descend.data.preprocess import Normalizer

        meta = mf.metadata
        if meta.get("kind") != FORMAT:
            raise InputError(f"{path}: not a descend ensemble file (a single model? use `descend predict`)")
        try:
            info = meta["ensemble"]
            spec = MLP.from_dict(info["spec"])
            n_members, classes, n_features = int(info["members"]), tuple(meta["classes"]), int(meta["n_features"])
            norm_arrays = {k[len("normalization."):]: v for k, v in mf.extra.items()
                           if k.startswith("normalization.")}
            normalizer = Normalizer.from_dict(meta["normalization"], norm_arrays)
            seeds = list(info.get("seeds") or [0] * n_members)
            member_info = list(info.get("member_info") or [{}] * n_members)
            scaler = None
            if spec.task == "regression":
                from descend.data.targets import TargetScaler

                scaler = TargetScaler.from_arrays({k: mf.extra[f"targets.{k}"] for k in ("mean", "std")})
                if len(meta["targets"]) != len(scaler.mean):
                    raise ValueError(f"{len(meta['targets'])} target names for {len(scaler.mean)} targets")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: corrupt ensemble metadata ({exc})") from None
        members = []
        for i in range(n_members):
            prefix = f"member{i}/"
            params = {k[len(prefix):]: v for k, v in mf.params.items() if k.startswith(prefix)}
            state = {k[len(prefix):]: v for k, v in mf.state.items() if k.startswith(prefix)}
            features = mf.extra.get(f"{prefix}features")
            if not params or features is None:
                raise InputError(f"{path}: member {i} is missing")
            features = np.asarray(features, dtype=np.int64)
            if features.ndim != 1 or features.size == 0 or features.min() < 0 or features.max() >= n_features:
                raise InputError(f"{path}: member {i}: feature indices out of range [0, {n_features})")
            if params.get("dense0.W") is None or params["dense0.W"].shape[0] != features.size:
                raise InputError(f"{path}: member {i}: weights do not match its {features.size} features")
            members.append(Member(params, state, features, int(seeds[i]), dict(member_info[i] or {})))
        vote = info.get("vote", "soft")
        return cls(spec, members, classes, n_features, normalizer, vote if vote in VOTES else "soft", meta, scaler)


def load_ensemble(path) -> Ensemble:
    """``Ensemble.load(path)``."""
    return Ensemble.load(path)
