//! The graph as Graphviz DOT: `dot -Tsvg graph.dot > graph.svg` draws it.

use super::{Graph, NodeId, Op};
use std::fmt::Write;

impl Graph {
    /// Every node, as DOT.
    pub fn to_dot(&self) -> String {
        self.to_dot_of(&[])
    }

    /// The nodes `outputs` depend on (every node when `outputs` is empty), as DOT: one box per
    /// node with its id, name or op, shape and element type; parameters and inputs stand out.
    /// Give a loss to see the forward pass, or gradient nodes to see the backward pass too.
    pub fn to_dot_of(&self, outputs: &[NodeId]) -> String {
        let n = self.nodes.len();
        let mut keep = vec![outputs.is_empty(); n];
        for o in outputs.iter().filter(|o| self.contains(**o)) {
            keep[o.0] = true;
        }
        for i in (0..n).rev() {
            if keep[i] {
                for x in &self.nodes[i].inputs {
                    keep[x.0] = true;
                }
            }
        }
        let mut s =
            String::from("digraph kiln {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
        for (i, node) in self.nodes.iter().enumerate().filter(|(i, _)| keep[*i]) {
            let what = match (&node.name, &node.op) {
                (Some(name), _) => format!("{name} ({})", node.op.name()),
                (None, op) => op.name().to_string(),
            };
            let style = match node.op {
                Op::Param { .. } => ", style=filled, fillcolor=\"#d9ead3\"",
                Op::Input { .. } => ", style=filled, fillcolor=\"#cfe2f3\"",
                _ => "",
            };
            let label = format!("#{i} {what}\\n{:?} {}", node.shape, node.dtype).replace('"', "'");
            let _ = writeln!(s, "  n{i} [label=\"{label}\"{style}];");
            for x in &node.inputs {
                let _ = writeln!(s, "  n{} -> n{i};", x.0);
            }
        }
        s.push_str("}\n");
        s
    }
}
