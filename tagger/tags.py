"""From scores to tags, the one rule: a label is a tag when its probability reaches its own threshold; tags are
listed best first. The handler answers with it and evaluation writes its result CSV with it.

    tags_above([0.91, 0.10, 0.55], ["sea", "car", "boat"], [0.5, 0.5, 0.6])    # ["sea"]
    tags_above([0.91, 0.10, 0.55], ["sea", "car", "boat"], [None, 0.5, 0.5])   # ["boat"]: sea is never a tag

A threshold of ``None`` means the label is scored but never a tag (too few positives to say when it is right).

A model carries one set of thresholds per tag policy (``meta["policies"]``, chosen at training time on
out-of-fold scores): ``precise`` (the default: each label's tags right at least 7 times in 10), ``balanced``
(F1-best) and ``complete`` (at least 8 in 10 of a label's photos tagged). ``policy_thresholds(meta, policy)`` gives
one set; a model made before policies has only ``balanced`` (its F1-best ``meta["thresholds"]``).
"""
from __future__ import annotations

from collections.abc import Sequence

POLICIES = ("precise", "balanced", "complete")
DEFAULT_POLICY = "precise"
#: What each policy asks of a label's out-of-fold decisions (``training.policies`` chooses thresholds by these).
POLICY_TARGETS = {"precise": {"precision": 0.7}, "balanced": {"f1": "best"}, "complete": {"recall": 0.8}}


class UnknownPolicy(ValueError):
    """A policy name that is not one of ``POLICIES`` (answered 400, naming them)."""

    def __init__(self, policy: object):
        super().__init__(f"unknown tag policy {policy!r}: choose precise (the default: tags right at least 7 times "
                         "in 10), balanced (F1-best) or complete (at least 8 in 10 of a label's photos tagged)")


class PolicyMissing(LookupError):
    """The model asked for carries no thresholds for the policy asked for (one made before tag policies)."""


def answer_tags(answer: dict, policy: str | None = None, *, default: str = DEFAULT_POLICY) -> tuple[list[str], str]:
    """``(tags, policy)`` of a model's answer (``{"tags", "tag_policy", "policy_tags", ...}``): ``policy``'s tags,
    else ``default``'s, else (a model made before policies) the tags it answered, under the policy it names.

    Raises:
        PolicyMissing: ``policy`` was asked for and the answer's model has no such thresholds.
    """
    by_policy = answer.get("policy_tags") or {answer.get("tag_policy") or "balanced": answer["tags"]}
    wanted = policy or default
    if wanted in by_policy:
        return list(by_policy[wanted]), wanted
    if policy is not None:
        raise PolicyMissing(f"model version {answer.get('model_version')} carries no {policy} thresholds (it has "
                            f"{', '.join(by_policy)}): it was made before tag policies; retrain it")
    return list(answer["tags"]), answer.get("tag_policy") or next(iter(by_policy))


def indexed_policy(answer: dict | None, policy: str | None = None, *, default: str = DEFAULT_POLICY) -> str:
    """Where the store's tag index (``prediction_tags``) holds the tags ``answer_tags`` gives for answers like
    ``answer`` (every answer of one model version has the same policies): the policy's name when the answer
    carries it in ``policy_tags``, else ``*`` (the tags it answered).

    Raises:
        PolicyMissing: as ``answer_tags`` does.
    """
    if answer is None:
        return "*"
    _, chosen = answer_tags(answer, policy, default=default)
    return chosen if chosen in (answer.get("policy_tags") or {}) else "*"


def tags_above(probs: Sequence[float], names: Sequence[str], thresholds: Sequence[float | None]) -> list[str]:
    """The names whose probability is at least their threshold, highest probability first (ties: label order);
    a ``None`` threshold never makes a tag."""
    if not len(probs) == len(names) == len(thresholds):
        raise ValueError(f"{len(probs)} scores, {len(names)} labels and {len(thresholds)} thresholds")
    order = sorted(range(len(names)), key=lambda j: -float(probs[j]))
    return [names[j] for j in order if thresholds[j] is not None and float(probs[j]) >= float(thresholds[j])]


def check_policy(policy: object) -> str:
    """``policy`` when it is one of ``POLICIES``; raises ``UnknownPolicy`` otherwise."""
    if policy not in POLICIES:
        raise UnknownPolicy(policy)
    return str(policy)


def served_policy(meta: dict) -> str:
    """The policy whose tags a model answers by default: its own record's, else ``balanced`` (made before)."""
    return meta.get("tag_policy") or ("balanced" if not meta.get("policies") else DEFAULT_POLICY)


def policy_thresholds(meta: dict, policy: str) -> list[float | None] | None:
    """The thresholds of ``policy`` in a model's metadata (``None`` when the model has no such set)."""
    policies = meta.get("policies")
    if not policies:
        return list(meta["thresholds"]) if policy == "balanced" else None
    entry = policies.get(check_policy(policy))
    return None if entry is None else list(entry["thresholds"])


def tags_by_policy(probs: Sequence[float], names: Sequence[str], meta: dict) -> dict[str, list[str]]:
    """``{policy: tags}`` for every policy the model carries."""
    out = {}
    for policy in POLICIES:
        thresholds = policy_thresholds(meta, policy)
        if thresholds is not None:
            out[policy] = tags_above(probs, names, thresholds)
    return out
