"""YAML for configs and run directories: ``yaml.safe_load`` plus a bound on what aliases expand to.

``safe_load`` builds no objects that run code, but an alias bomb ("billion laughs": nine anchors each
listing the previous one nine times) is a 1 kB file that stands for ~10⁹ values. The loader shares them,
so loading is cheap; everything that later walks the value (validation, ``json.dumps``, logging the
params to MLflow) does the expansion and grows to gigabytes. :func:`load` counts the values the document
stands for, aliases expanded, before constructing anything, and refuses more than :data:`MAX_NODES`
(or an alias that refers to itself).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000


class YamlTooLarge(ValueError):
    """A YAML document whose aliases expand to more values than :data:`MAX_NODES`."""


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int], limit: int) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise YamlTooLarge("an alias refers to the value that contains it (a recursive YAML structure)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, active, limit) + _expanded_size(v, memo, active, limit)
            if size > limit:
                break
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            size += _expanded_size(v, memo, active, limit)
            if size > limit:
                break
    active.discard(key)
    memo[key] = size
    if size > limit:
        raise YamlTooLarge(f"its aliases expand to more than {limit:,} values (a YAML alias bomb?); "
                           "write the values out instead of repeating anchors")
    return size


def load(text: str, *, max_nodes: int = MAX_NODES) -> Any:
    """``yaml.safe_load(text)``, refusing a document that stands for more than ``max_nodes`` values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            _expanded_size(node, {}, set(), max_nodes)
        except RecursionError:
            raise YamlTooLarge("it is nested too deeply") from None
        return loader.construct_document(node)
    finally:
        loader.dispose()
