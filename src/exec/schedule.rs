//! The select and schedule passes: which nodes a program computes, in which order, which
//! tensors must outlive the step, and which node reads each tensor last.

use crate::graph::{Graph, NodeId, Op};
use std::collections::HashMap;

/// What a program computes, in order, with what the memory plan needs to know about lifetimes.
pub(crate) struct Schedule {
    /// The non-leaf nodes to run, and every leaf they read, in topological (graph) order.
    pub order: Vec<usize>,
    /// `needed[i]`: node `i` is computed or read by the program.
    pub needed: Vec<bool>,
    /// Parameter state updates this program applies after its forward pass (batch norm).
    pub assigns: Vec<(usize, NodeId)>,
    /// The node whose storage node `i` uses: reshapes and contiguous slices alias their
    /// operand (see [`alias_of`]).
    pub root: Vec<usize>,
    /// Storage roots that must survive the whole step (fetched, assigned, checked).
    pub persistent: Vec<bool>,
    /// `last_use[r]`: the last node (in `order`) that reads storage root `r`.
    pub last_use: Vec<usize>,
}

/// Select the nodes `fetches`, the gradient nodes in `grad_of` and the values in `keep` depend
/// on; with `training`, add the state updates (`Graph::assign`) whose value depends on a node
/// this program computes.
pub(crate) fn select(
    graph: &Graph,
    fetches: &[NodeId],
    grad_of: &HashMap<usize, Vec<usize>>,
    keep: &[NodeId],
    training: bool,
) -> Schedule {
    let nodes = graph.nodes();
    let mut needed = vec![false; nodes.len()];
    for f in fetches.iter().chain(keep) {
        needed[f.index()] = true;
    }
    for &g in grad_of.keys() {
        needed[g] = true;
    }
    let close = |needed: &mut Vec<bool>| {
        for i in (0..nodes.len()).rev() {
            if needed[i] {
                for x in &nodes[i].inputs {
                    needed[x.index()] = true;
                }
            }
        }
    };
    close(&mut needed);
    // State updates of the forward pass a training program runs: those whose value depends on
    // a node this program computes. The update is a side branch no fetch depends on, so it is
    // added to the needed set here.
    let mut touches = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        touches[i] = (needed[i] && !n.op.is_leaf()) || n.inputs.iter().any(|x| touches[x.index()]);
    }
    let assigns: Vec<(usize, NodeId)> = if training {
        graph
            .assigns()
            .iter()
            .copied()
            .filter(|(_, v)| touches[v.index()])
            .collect()
    } else {
        Vec::new()
    };
    for (_, v) in &assigns {
        needed[v.index()] = true;
    }
    close(&mut needed);

    let mut root: Vec<usize> = (0..nodes.len()).collect();
    for (i, n) in nodes.iter().enumerate() {
        if alias_of(graph, i).is_some() {
            root[i] = root[n.inputs[0].index()];
        }
    }
    let mut persistent = vec![false; nodes.len()];
    for f in fetches.iter().chain(keep).chain(assigns.iter().map(|(_, v)| v)) {
        persistent[root[f.index()]] = true;
    }
    let order: Vec<usize> = (0..nodes.len()).filter(|&i| needed[i]).collect();
    let mut last_use = vec![0usize; nodes.len()];
    for &i in &order {
        last_use[root[i]] = last_use[root[i]].max(i);
        for x in &nodes[i].inputs {
            last_use[root[x.index()]] = last_use[root[x.index()]].max(i);
        }
    }
    Schedule {
        order,
        needed,
        assigns,
        root,
        persistent,
        last_use,
    }
}

/// When node `i` is a view of its operand's storage rather than a computed tensor: the element
/// offset of its first element there. Reshapes and stop-gradients alias at offset 0; a slice
/// aliases when it is one
/// contiguous run of its operand (every axis before the sliced one has size 1, as when a
/// sequence `(T, N, F)` is cut into time steps) and starts on a 4-byte boundary.
pub(crate) fn alias_of(graph: &Graph, i: usize) -> Option<usize> {
    let n = &graph.nodes()[i];
    match n.op {
        Op::Reshape | Op::StopGradient => Some(0),
        Op::Slice { axis, start, .. } => {
            let dims = &graph.shape(n.inputs[0]).0;
            let inner: usize = dims[axis + 1..].iter().product();
            let first = start * inner;
            let contiguous = dims[..axis].iter().all(|&d| d == 1);
            (contiguous && n.dtype.bytes(first).is_multiple_of(4)).then_some(first)
        }
        _ => None,
    }
}
