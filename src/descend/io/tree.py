"""Minimal pytrees (nested dict / list / tuple / NamedTuple of arrays), no jax needed.

Optimizer states are NamedTuples of params dicts (optax style).  The training
loop must save them in a checkpoint on every engine, including engines without
jax installed, so the few tree operations it needs live here.  Any value that
is not a dict, list or tuple (arrays, scalars, ``None``) is a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["TreeDef", "flatten", "unflatten", "flatten_with_paths", "unflatten_from_paths", "map"]


@dataclass(frozen=True)
class TreeDef:
    """The shape of a tree without its leaves; comparable and hashable.

    kind is "leaf", "dict", "list", "tuple" or "namedtuple"; `keys` holds dict
    keys (insertion order) or NamedTuple field names; `type` the container type.
    """

    kind: str
    type: type | None = None
    keys: tuple = ()
    children: tuple["TreeDef", ...] = ()

    @property
    def num_leaves(self) -> int:
        return 1 if self.kind == "leaf" else sum(c.num_leaves for c in self.children)


_LEAF = TreeDef("leaf")


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _children(tree: Any) -> tuple[str, type | None, tuple, tuple] | None:
    """(kind, type, keys, child values) of a container node, or None for a leaf."""
    if isinstance(tree, dict):
        return "dict", type(tree), tuple(tree.keys()), tuple(tree.values())
    if _is_namedtuple(tree):
        return "namedtuple", type(tree), tuple(type(tree)._fields), tuple(tree)
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return kind, type(tree), tuple(range(len(tree))), tuple(tree)
    return None


def _flatten(tree: Any, leaves: list, paths: list | None, prefix: str) -> TreeDef:
    node = _children(tree)
    if node is None:
        leaves.append(tree)
        if paths is not None:
            paths.append(prefix)
        return _LEAF
    kind, typ, keys, values = node
    defs = tuple(
        _flatten(v, leaves, paths, f"{prefix}.{k}" if prefix else str(k))
        for k, v in zip(keys, values)
    )
    return TreeDef(kind, typ, keys, defs)


def flatten(tree: Any) -> tuple[list, TreeDef]:
    """Leaves in a deterministic depth-first order, and the structure to rebuild them."""
    leaves: list = []
    return leaves, _flatten(tree, leaves, None, "")


def unflatten(treedef: TreeDef, leaves) -> Any:
    """Inverse of :func:`flatten`; container types (NamedTuples included) are restored."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"tree expects {treedef.num_leaves} leaves, got {len(leaves)}")
    it = iter(leaves)

    def build(d: TreeDef) -> Any:
        if d.kind == "leaf":
            return next(it)
        values = [build(c) for c in d.children]
        if d.kind == "dict":
            return d.type(zip(d.keys, values))
        if d.kind == "namedtuple":
            return d.type(*values)
        return d.type(values)

    return build(treedef)


def flatten_with_paths(tree: Any) -> dict[str, Any]:
    """``{"0.count": leaf, "1.trace.dense0.W": leaf, ...}`` in :func:`flatten` order.

    Paths join dict keys, NamedTuple field names and sequence indices with
    dots; they depend only on the structure, so a checkpoint written by one
    process can be matched against a freshly initialised state in another.
    A top-level leaf has the path "".
    """
    leaves: list = []
    paths: list = []
    _flatten(tree, leaves, paths, "")
    out = dict(zip(paths, leaves))
    if len(out) != len(paths):
        dup = sorted({p for p in paths if paths.count(p) > 1})
        raise ValueError(f"ambiguous tree paths (keys containing '.'?): {dup}")
    return out


def unflatten_from_paths(template: Any, mapping: dict[str, Any]) -> Any:
    """A tree shaped like `template` whose leaves are taken from `mapping` by path.

    Used on resume: initialise the optimizer state, then fill it from the
    checkpoint.  Missing paths raise KeyError listing them.
    """
    paths = list(flatten_with_paths(template))
    missing = [p for p in paths if p not in mapping]
    if missing:
        raise KeyError(f"missing tree paths: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return unflatten(flatten(template)[1], [mapping[p] for p in paths])


def map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:  # noqa: A001 - mirrors jax.tree.map
    """Apply `fn` leaf-wise over trees of identical structure."""
    leaves, treedef = flatten(tree)
    others = []
    for r in rest:
        r_leaves, r_def = flatten(r)
        if r_def != treedef:
            raise ValueError("tree structures differ")
        others.append(r_leaves)
    return unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])

