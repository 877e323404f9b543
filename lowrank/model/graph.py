"""The model's structure as a networkx DiGraph: layers and ops as nodes, data flow as edges.

Built from ``torch.fx`` where the model traces symbolically; otherwise a chain of the layers
in the order the forward pass called them (``graph.graph["source"]`` says which).
"""
from __future__ import annotations

import operator

import networkx as nx
import torch
from torch import nn

_ADDS = {operator.add, operator.iadd, torch.add}


def build_graph(model: nn.Module, call_order: list[str]) -> nx.DiGraph:
    g = nx.DiGraph()
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:  # dynamic control flow, non-tensor inputs, ...
        g.graph["source"] = f"hook order (torch.fx could not trace: {type(exc).__name__})"
        for i, name in enumerate(call_order):
            g.add_node(name, op="call_module", layer=name)
            if i:
                g.add_edge(call_order[i - 1], name)
        return g
    g.graph["source"] = "torch.fx"
    for node in traced.graph.nodes:
        layer = node.target if node.op == "call_module" else None
        g.add_node(node.name, op=node.op, target=str(node.target), layer=layer)
        for src in node.all_input_nodes:
            g.add_edge(src.name, node.name)
        if node.op == "call_function" and node.target in _ADDS or (node.op == "call_method" and node.target in ("add", "add_")):
            g.nodes[node.name]["join"] = len(node.all_input_nodes) >= 2
    return g


def layer_order(g: nx.DiGraph) -> list[str]:
    """Module names in a topological (execution) order."""
    return [g.nodes[n]["layer"] for n in nx.topological_sort(g) if g.nodes[n].get("layer")]


def residual_joins(g: nx.DiGraph, layers: set[str] | None = None) -> dict[str, list[str]]:
    """Each residual add -> the nearest layers (of ``layers``, default any) feeding each of its inputs."""
    out = {}
    for node, data in g.nodes(data=True):
        if not data.get("join"):
            continue
        feeders = []
        for src in g.predecessors(node):
            feeders += _nearest_layers(g, src, layers)
        out[node] = sorted(set(feeders))
    return out


def _nearest_layers(g: nx.DiGraph, start: str, layers: set[str] | None) -> list[str]:
    found, stack, seen = [], [start], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        layer = g.nodes[n].get("layer")
        if layer and (layers is None or layer in layers):
            found.append(layer)
            continue
        stack.extend(g.predecessors(n))
    return found
