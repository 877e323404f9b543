"""The model's structure as a networkx DiGraph: layers and ops as nodes, data flow as edges.

Built from ``torch.fx`` where the model traces symbolically; otherwise a chain of the layers
in the order the forward pass called them (``graph.graph["source"]`` says which).
"""
from __future__ import annotations

import networkx as nx
import torch
from torch import nn


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
    return g


def severing(g: nx.DiGraph, zeroed: list[str]) -> list[str]:
    """Which of the layers ``zeroed`` (kept at rank 0: a constant output) leave the model's
    output independent of its input: those every input-to-output path passes through, or
    all of them where only together they cut every path. Empty when some path survives, or
    when the graph is only the call order (torch.fx could not trace: no reliable paths)."""
    if not zeroed or g.graph.get("source") != "torch.fx":
        return []
    nodes = {name: [n for n, d in g.nodes(data=True) if d.get("layer") == name] for name in zeroed}
    inputs = [n for n, d in g.nodes(data=True) if d.get("op") == "placeholder"]
    outputs = [n for n, d in g.nodes(data=True) if d.get("op") == "output"]

    def cut(names) -> bool:
        rest = g.subgraph(n for n in g if n not in {x for name in names for x in nodes[name]})
        return not any(nx.has_path(rest, i, o) for i in inputs for o in outputs if i in rest and o in rest)

    alone = [name for name in zeroed if cut([name])]
    return alone or (list(zeroed) if cut(zeroed) else [])
