"""Pictures of a compiled topology: plain text, Graphviz dot, Mermaid."""

from __future__ import annotations

from typing import Literal

from fogrt.topology.compile import CompiledNode, CompiledTopology

GraphFormat = Literal["text", "dot", "mermaid"]


def render(topology: CompiledTopology, fmt: GraphFormat = "text") -> str:
    """The graph in one of the supported formats."""
    return {"text": _text, "dot": _dot, "mermaid": _mermaid}[fmt](topology)


def _label(node: CompiledNode) -> str:
    if node.role == "source":
        return f"{node.id} [source {node.coap}]"
    extra = f" where {node.where.source}" if node.where is not None else ""
    keyed = f" key={node.key}" if node.key != "device" else ""
    return f"{node.id} [{node.use}{keyed}{extra}]"


def _text(t: CompiledTopology) -> str:
    lines = [f"topology {t.name} ({t.file})"]
    for node in t.nodes:
        lines.append(f"  {_label(node)}")
        if node.inputs:
            lines.append(f"      <- {', '.join(node.inputs)}")
        if node.role != "sink":
            fields = ", ".join(f"{k}:{v}" for k, v in node.schema.items())
            lines.append(f"      fields: {fields}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DOT_SHAPE = {"source": "invhouse", "operator": "box", "sink": "house"}


def _dot(t: CompiledTopology) -> str:
    lines = [f"digraph {_quote(t.name)} {{", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node in t.nodes:
        label = f"{node.id}\\n{node.use if node.role != 'source' else node.coap}"
        lines.append(f"  {_quote(node.id)} [shape={_DOT_SHAPE[node.role]}, label={_quote(label)}];")
    for node in t.nodes:
        for parent in node.inputs:
            attr = f" [label={_quote(node.where.source)}]" if node.where is not None else ""
            lines.append(f"  {_quote(parent)} -> {_quote(node.id)}{attr};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


_MERMAID_SHAPE = {"source": ('[/"', '"/]'), "operator": ('["', '"]'), "sink": ('[("', '")]')}


def _mermaid(t: CompiledTopology) -> str:
    lines = ["flowchart LR"]
    ids = {node.id: f"n{i}" for i, node in enumerate(t.nodes)}
    for node in t.nodes:
        left, right = _MERMAID_SHAPE[node.role]
        detail = node.use if node.role != "source" else node.coap or ""
        lines.append(
            f"  {ids[node.id]}{left}{_mermaid_text(node.id)}<br/>{_mermaid_text(detail)}{right}"
        )
    for node in t.nodes:
        for parent in node.inputs:
            arrow = (
                f' -->|"{_mermaid_text(node.where.source)}"| '
                if node.where is not None
                else " --> "
            )
            lines.append(f"  {ids[parent]}{arrow}{ids[node.id]}")
    return "\n".join(lines) + "\n"
