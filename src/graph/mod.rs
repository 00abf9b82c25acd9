//! The computational graph: nodes, parameters, and the builder methods that add ops with their
//! output shapes inferred (and checked) as the graph is built.

mod augment;
mod conv;
mod dot;
mod norm;
mod op;
mod random;
mod rnn;

pub use augment::Augment;
pub use op::{BinaryOp, Op, ReduceOp, UnaryOp, Window};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::shape::{broadcast_shapes, DType, Shape};
use std::collections::HashMap;

/// The most elements a broadcast of a constant may have to be folded into a constant of its own.
const FOLD_BROADCAST: usize = 1 << 16;

/// A node of a [`Graph`]: its position and the identity of the graph that made it, so an id
/// used with another graph is an error rather than a silent reference to whatever node sits at
/// that position there. A clone of a graph keeps its identity (its ids stay valid in the clone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize, pub(crate) u32);

impl NodeId {
    /// The node's position in the graph (nodes are stored in topological order).
    pub fn index(self) -> usize {
        self.0
    }
}

/// Identities handed to graphs as they are created.
static NEXT_GRAPH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// One node: an op, its operands and its output shape.
#[derive(Clone, Debug)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Its operands (always earlier nodes).
    pub inputs: Vec<NodeId>,
    /// Its output shape.
    pub shape: Shape,
    /// Its element type.
    pub dtype: DType,
    /// An optional name for messages.
    pub name: Option<String>,
}

/// A trainable (or frozen) tensor owned by the ParamStore.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// Unique name; checkpoints and ParamStores match parameters by it.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// How it is initialised.
    pub init: Init,
    /// Frozen parameters get no gradient and no update.
    pub trainable: bool,
    /// Whether weight decay and norm penalties apply by default (weights yes, biases no).
    pub decay: bool,
    /// The param node.
    pub node: NodeId,
}

/// A directed acyclic graph of tensor ops. Nodes are appended in topological order.
#[derive(Clone, Debug)]
pub struct Graph {
    id: u32,
    nodes: Vec<Node>,
    params: Vec<ParamInfo>,
    param_by_name: HashMap<String, usize>,
    input_by_name: HashMap<String, NodeId>,
    assigns: Vec<(usize, NodeId)>,
}

fn shape_err(op: &'static str, node: String, shapes: Vec<&Shape>, reason: impl Into<String>) -> Error {
    Error::Shape {
        op,
        node,
        shapes: shapes.into_iter().map(|s| s.0.clone()).collect(),
        reason: reason.into(),
    }
}

impl Default for Graph {
    fn default() -> Self {
        Graph {
            id: NEXT_GRAPH.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            nodes: Vec::new(),
            params: Vec::new(),
            param_by_name: HashMap::new(),
            input_by_name: HashMap::new(),
            assigns: Vec::new(),
        }
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// This graph's identity (shared with its clones).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Whether `id` was made by this graph (or by the graph this one was cloned from) and
    /// names one of its nodes.
    pub fn contains(&self, id: NodeId) -> bool {
        id.1 == self.id && id.0 < self.nodes.len()
    }

    /// `Ok` when every id in `ids` is a node of this graph, else an error naming `op` and the
    /// first foreign or out-of-range id.
    pub fn check_ids(&self, op: &str, ids: &[NodeId]) -> Result<()> {
        for &id in ids {
            if id.1 != self.id {
                return Err(Error::UnknownNode(format!(
                    "{op}: node #{} belongs to another graph (graph {}, this is graph {})",
                    id.0, id.1, self.id
                )));
            }
            if id.0 >= self.nodes.len() {
                return Err(Error::UnknownNode(format!(
                    "{op}: node #{} is not a node of this graph ({} nodes)",
                    id.0,
                    self.nodes.len()
                )));
            }
        }
        Ok(())
    }

    /// All nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node. Panics when `id` is not a node of this graph (see [`Graph::contains`]):
    /// answering with whatever node sits at that position elsewhere would be silently wrong.
    pub fn node(&self, id: NodeId) -> &Node {
        assert!(
            id.1 == self.id,
            "node #{} belongs to graph {}, not to this graph ({})",
            id.0,
            id.1,
            self.id
        );
        &self.nodes[id.0]
    }

    /// The shape of a node (panics as [`Graph::node`] does).
    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.node(id).shape
    }

    /// The parameters, in creation order.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The parameter node called `name`.
    pub fn param_node(&self, name: &str) -> Option<NodeId> {
        self.param_by_name.get(name).map(|&i| self.params[i].node)
    }

    /// The input node called `name`.
    pub fn input_node(&self, name: &str) -> Option<NodeId> {
        self.input_by_name.get(name).copied()
    }

    /// Names of all inputs.
    pub fn input_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.input_by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// Give a node a name used in messages and plans.
    pub fn set_name(&mut self, id: NodeId, name: impl Into<String>) {
        assert!(
            self.contains(id),
            "set_name: node #{} is not a node of this graph",
            id.0
        );
        self.nodes[id.0].name = Some(name.into());
    }

    /// `#12 \`fc1.w\`` or `#12 (matmul)`: how messages refer to a node.
    pub fn describe(&self, id: NodeId) -> String {
        match self.nodes.get(id.0).filter(|_| id.1 == self.id) {
            Some(n) => match &n.name {
                Some(name) => format!("#{} `{}`", id.0, name),
                None => format!("#{} ({})", id.0, n.op.name()),
            },
            None => format!("#{} (not in this graph)", id.0),
        }
    }

    /// How messages refer to a node being built from `inputs`.
    pub(crate) fn describe_new(&self, inputs: &[NodeId]) -> String {
        let ops: Vec<String> = inputs.iter().map(|&i| self.describe(i)).collect();
        format!("#{} from {}", self.nodes.len(), ops.join(", "))
    }

    /// Append a node whose shape has already been checked, inferring (and checking) its element
    /// type from its operands.
    pub(crate) fn push(&mut self, op: Op, inputs: Vec<NodeId>, shape: Shape) -> Result<NodeId> {
        let dtype = self.infer_dtype(&op, &inputs)?;
        Ok(self.push_typed(op, inputs, shape, dtype))
    }

    fn push_typed(&mut self, op: Op, inputs: Vec<NodeId>, shape: Shape, dtype: DType) -> NodeId {
        self.nodes.push(Node {
            op,
            inputs,
            shape,
            dtype,
            name: None,
        });
        NodeId(self.nodes.len() - 1, self.id)
    }

    /// The element type of a node (panics as [`Graph::node`] does).
    pub fn dtype(&self, id: NodeId) -> DType {
        self.node(id).dtype
    }

    /// The element type `op` produces from `inputs`: arithmetic takes floats of one type and
    /// keeps it; labels and indices are `u32`.
    fn infer_dtype(&self, op: &Op, inputs: &[NodeId]) -> Result<DType> {
        let d: Vec<DType> = inputs.iter().map(|&i| self.nodes[i.0].dtype).collect();
        let err = |reason: &str| Error::DType {
            op: op.name(),
            node: self.describe_new(inputs),
            dtypes: d.clone(),
            reason: reason.into(),
        };
        let float = |ds: &[DType]| -> Result<DType> {
            match ds.first() {
                Some(&first) if first.is_float() && ds.iter().all(|&x| x == first) => Ok(first),
                Some(_) if ds.iter().all(|x| x.is_float()) => {
                    Err(err("float operands must have one type; convert one with Graph::cast"))
                }
                Some(_) => Err(err("this op takes floats; convert with Graph::cast")),
                None => Ok(DType::F32),
            }
        };
        let index = |x: DType, what: &str| -> Result<()> {
            if x == DType::U32 {
                Ok(())
            } else {
                Err(err(&format!("{what} must be u32")))
            }
        };
        match op {
            Op::Input { classes, .. } => Ok(if classes.is_some() { DType::U32 } else { DType::F32 }),
            Op::Param { .. } | Op::Const { .. } | Op::DropoutMask { .. } => Ok(DType::F32),
            Op::Cast(to) => Ok(*to),
            Op::Where if !d[0].is_float() => Err(err(
                "the condition must be a float tensor (nonzero is true); convert it with Graph::cast",
            )),
            Op::Where => float(&d[1..]),
            Op::MaxPoolArgmax(_) => float(&d).map(|_| DType::U32),
            Op::Augment { .. } => float(&d),
            Op::GatherPlanes | Op::ScatterPlanes(_) => {
                index(d[1], "pooling indices")?;
                float(&d[..1])
            }
            Op::GatherRows | Op::ScatterAddRows => {
                index(d[1], "ids")?;
                float(&d[..1])
            }
            Op::SoftmaxCrossEntropy { .. } => {
                index(d[1], "labels")?;
                float(&d[..1])
            }
            Op::SoftmaxCrossEntropyGrad { .. } => {
                index(d[1], "labels")?;
                float(&[d[0], d[2]])
            }
            Op::OneHot { .. } => index(d[0], "labels").map(|_| DType::F32),
            // Data movement keeps any type.
            Op::Reshape
            | Op::Permute { .. }
            | Op::BroadcastTo
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::StopGradient => Ok(d[0]),
            Op::Concat { .. } => {
                if d.iter().all(|&x| x == d[0]) {
                    Ok(d[0])
                } else {
                    Err(err("concatenated tensors must have one type"))
                }
            }
            Op::Unary(_)
            | Op::UnaryGrad(_)
            | Op::Binary(_)
            | Op::Reduce { .. }
            | Op::MatMul { .. }
            | Op::Softmax
            | Op::LogSoftmax
            | Op::Im2Col(_)
            | Op::Col2Im(_)
            | Op::AvgPool(_)
            | Op::AvgPoolGrad(_)
            | Op::LstmCell
            | Op::LstmCellGrad
            | Op::GruCell
            | Op::GruCellGrad
            | Op::ChannelMoments
            | Op::BatchNorm { .. }
            | Op::BatchNormSums
            | Op::Bernoulli { .. } => float(&d),
        }
    }

    // ----- leaves -------------------------------------------------------------------------

    /// A fed f32 input. Names are unique; asking again with the same shape returns the node.
    pub fn input(&mut self, name: &str, shape: impl Into<Shape>) -> Result<NodeId> {
        self.input_impl(name, shape.into(), None)
    }

    /// A fed tensor of element type `dtype` (e.g. `u32` token ids, or an `f16` batch).
    pub fn input_typed(&mut self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Result<NodeId> {
        if let Some(&id) = self.input_by_name.get(name) {
            if self.dtype(id) != dtype {
                return Err(Error::DType {
                    op: "input",
                    node: self.describe(id),
                    dtypes: vec![self.dtype(id), dtype],
                    reason: "an input of this name already exists with another type".into(),
                });
            }
            return self.input_impl(name, shape.into(), None);
        }
        let id = self.input_impl(name, shape.into(), None)?;
        self.nodes[id.0].dtype = dtype;
        Ok(id)
    }

    /// A fed vector of integer class labels in `0..classes`.
    pub fn labels(&mut self, name: &str, shape: impl Into<Shape>, classes: usize) -> Result<NodeId> {
        if classes == 0 {
            return crate::error::invalid("labels", format!("input `{name}` needs at least one class"));
        }
        self.input_impl(name, shape.into(), Some(classes))
    }

    fn input_impl(&mut self, name: &str, shape: Shape, classes: Option<usize>) -> Result<NodeId> {
        if let Some(&id) = self.input_by_name.get(name) {
            let n = &self.nodes[id.0];
            if n.shape == shape
                && n.op
                    == (Op::Input {
                        name: name.into(),
                        classes,
                    })
            {
                return Ok(id);
            }
            return Err(shape_err(
                "input",
                self.describe(id),
                vec![&n.shape, &shape],
                "an input of this name already exists with another shape or kind",
            ));
        }
        if shape.numel() == 0 {
            return Err(shape_err(
                "input",
                name.into(),
                vec![&shape],
                "inputs must not be empty",
            ));
        }
        let dtype = if classes.is_some() { DType::U32 } else { DType::F32 };
        let id = self.push_typed(
            Op::Input {
                name: name.into(),
                classes,
            },
            vec![],
            shape,
            dtype,
        );
        self.set_name(id, name);
        self.input_by_name.insert(name.into(), id);
        Ok(id)
    }

    /// A trainable parameter. Weight decay and norm penalties apply to it by default when its
    /// rank is at least 2 (weights), not when it is a vector (biases, norm scales).
    ///
    /// Names are unique: asking again for an existing name with the same shape returns the
    /// existing node, so a model can be built twice (training and evaluation) over one set of
    /// weights.
    pub fn param(&mut self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<NodeId> {
        let shape = shape.into();
        if let Some(&i) = self.param_by_name.get(name) {
            let p = &self.params[i];
            if p.shape == shape {
                return Ok(p.node);
            }
            return Err(shape_err(
                "param",
                format!("`{name}`"),
                vec![&p.shape, &shape],
                "a parameter of this name already exists with another shape",
            ));
        }
        if shape.numel() == 0 {
            return Err(shape_err(
                "param",
                format!("`{name}`"),
                vec![&shape],
                "parameters must not be empty",
            ));
        }
        init.validate(name)?;
        let index = self.params.len();
        let id = self.push_typed(Op::Param { index }, vec![], shape.clone(), DType::F32);
        self.set_name(id, name);
        let decay = shape.rank() >= 2;
        self.params.push(ParamInfo {
            name: name.into(),
            shape,
            init,
            trainable: true,
            decay,
            node: id,
        });
        self.param_by_name.insert(name.into(), index);
        Ok(id)
    }

    fn param_mut(&mut self, name: &str) -> Result<&mut ParamInfo> {
        match self.param_by_name.get(name) {
            Some(&i) => Ok(&mut self.params[i]),
            None => Err(Error::UnknownNode(format!("no parameter named `{name}`"))),
        }
    }

    /// Freeze (`false`) or unfreeze a parameter: frozen ones get no gradient and no update.
    pub fn set_trainable(&mut self, name: &str, trainable: bool) -> Result<()> {
        self.param_mut(name)?.trainable = trainable;
        Ok(())
    }

    /// Choose whether weight decay and norm penalties apply to a parameter.
    pub fn set_decay(&mut self, name: &str, decay: bool) -> Result<()> {
        self.param_mut(name)?.decay = decay;
        Ok(())
    }

    /// Make training programs overwrite the parameter `param` with `value` after each step's
    /// forward pass (how batch norm keeps its running statistics). `param` should be frozen.
    /// Applies in every training program whose computation includes `value`.
    pub fn assign(&mut self, param: NodeId, value: NodeId) -> Result<()> {
        self.check_ids("assign", &[param, value])?;
        let index = match self.node(param).op {
            Op::Param { index } => index,
            _ => return crate::error::invalid("assign", format!("{} is not a parameter", self.describe(param))),
        };
        if self.shape(param) != self.shape(value) {
            return Err(shape_err(
                "assign",
                self.describe_new(&[param, value]),
                vec![self.shape(param), self.shape(value)],
                "value and parameter shapes differ",
            ));
        }
        self.assigns.push((index, value));
        Ok(())
    }

    /// The registered state updates: `(parameter index, value node)`.
    pub fn assigns(&self) -> &[(usize, NodeId)] {
        &self.assigns
    }

    /// A tensor of the given shape filled with `value`.
    pub fn constant(&mut self, value: f32, shape: impl Into<Shape>) -> NodeId {
        self.push_typed(Op::Const { value }, vec![], shape.into(), DType::F32)
    }

    /// A tensor of the given shape and element type filled with `value` (rounded to the type).
    pub fn constant_typed(&mut self, value: f32, shape: impl Into<Shape>, dtype: DType) -> NodeId {
        self.push_typed(Op::Const { value }, vec![], shape.into(), dtype)
    }

    /// `x` converted to `dtype` (see [`Op::Cast`]); `x` itself when it already has that type.
    /// The gradient flows back through the conversion in the other direction.
    pub fn cast(&mut self, x: NodeId, dtype: DType) -> Result<NodeId> {
        self.check_ids("cast", &[x])?;
        if self.dtype(x) == dtype {
            return Ok(x);
        }
        let s = self.shape(x).clone();
        self.push(Op::Cast(dtype), vec![x], s)
    }

    /// `x` converted to `like`'s element type (how layers follow their input's precision).
    pub fn cast_like(&mut self, x: NodeId, like: NodeId) -> Result<NodeId> {
        self.check_ids("cast", &[like])?;
        let d = self.dtype(like);
        self.cast(x, d)
    }

    /// A scalar constant.
    pub fn scalar(&mut self, value: f32) -> NodeId {
        self.constant(value, Shape::scalar())
    }

    /// `x` in the forward pass, a constant to autodiff: no gradient flows back through it (see
    /// [`Op::StopGradient`]). It is an op rather than an option of `backward` so that the graph
    /// alone says what is differentiated: a helper can build a perturbation or a sample inside a
    /// model, and every later `backward`/`gradients` call treats it as data without being told.
    pub fn stop_gradient(&mut self, x: NodeId) -> Result<NodeId> {
        self.check_ids("stop_gradient", &[x])?;
        let s = self.shape(x).clone();
        self.push(Op::StopGradient, vec![x], s)
    }

    // ----- element-wise -------------------------------------------------------------------

    /// Apply an element-wise function.
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.check_ids("unary", &[x])?;
        match op {
            UnaryOp::Clamp(lo, hi) if lo > hi || lo.is_nan() || hi.is_nan() => {
                return crate::error::invalid("clamp", format!("min {lo} is greater than max {hi}"))
            }
            UnaryOp::Elu(a) | UnaryOp::LeakyRelu(a) if !a.is_finite() => {
                return crate::error::invalid("activation", format!("α must be finite, got {a}"))
            }
            _ => {}
        }
        let s = self.shape(x).clone();
        // A constant's scaling or shift is a constant: no kernel (the seed of a mean's gradient).
        let folded = match (self.constant_of(x), op) {
            (Some(v), UnaryOp::MulScalar(c)) => Some(c * v),
            (Some(v), UnaryOp::AddScalar(c)) => Some(v + c),
            (Some(v), UnaryOp::Neg) => Some(-v),
            _ => None,
        };
        if let Some(v) = folded {
            let dtype = self.dtype(x);
            return Ok(self.constant_typed(v, s, dtype));
        }
        self.push(Op::Unary(op), vec![x], s)
    }

    /// The value of `x` if it is a float constant ([`Graph::constant`]), which ops that keep
    /// every element equal may fold: the value is computed here in f32 as the kernels compute
    /// it, and stored in the constant's type as their result would be.
    fn constant_of(&self, x: NodeId) -> Option<f32> {
        match self.node(x).op {
            Op::Const { value } if self.dtype(x).is_float() => Some(value),
            _ => None,
        }
    }

    /// `dy · f'(x)`, used by gradient rules.
    pub(crate) fn unary_grad(&mut self, op: UnaryOp, x: NodeId, dy: NodeId) -> Result<NodeId> {
        let s = self.shape(x).clone();
        self.push(Op::UnaryGrad(op), vec![x, dy], s)
    }

    /// Apply an element-wise binary function with NumPy broadcasting.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.check_ids("binary", &[a, b])?;
        let (sa, sb) = (self.shape(a), self.shape(b));
        let s = broadcast_shapes(sa, sb).ok_or_else(|| {
            shape_err(
                binary_name(op),
                self.describe_new(&[a, b]),
                vec![sa, sb],
                "shapes do not broadcast",
            )
        })?;
        self.push(Op::Binary(op), vec![a, b], s)
    }

    /// `a + b` (broadcasting).
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }
    /// `a − b` (broadcasting).
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }
    /// `a · b` element-wise (broadcasting).
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }
    /// `a / b` (broadcasting).
    pub fn div(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }
    /// `max(a, b)` element-wise (broadcasting).
    pub fn maximum(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Max, a, b)
    }
    /// `min(a, b)` element-wise (broadcasting).
    pub fn minimum(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Min, a, b)
    }
    /// `a^b` element-wise (broadcasting); `a` must be positive where `b` is not an integer.
    pub fn pow(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Pow, a, b)
    }
    /// `1` where `a > b`, else `0`.
    pub fn greater(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Greater, a, b)
    }
    /// `1` where `a = b`, else `0`.
    pub fn equal(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Equal, a, b)
    }

    /// `cond ≠ 0 ? a : b`, all three broadcast together.
    pub fn where_(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.check_ids("where", &[cond, a, b])?;
        let (sc, sa, sb) = (self.shape(cond), self.shape(a), self.shape(b));
        let s = broadcast_shapes(sa, sb)
            .and_then(|s| broadcast_shapes(sc, &s))
            .ok_or_else(|| {
                shape_err(
                    "where",
                    self.describe_new(&[cond, a, b]),
                    vec![sc, sa, sb],
                    "shapes do not broadcast",
                )
            })?;
        self.push(Op::Where, vec![cond, a, b], s)
    }

    /// `-x`
    pub fn neg(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Neg, x)
    }
    /// `e^x`
    pub fn exp(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Exp, x)
    }
    /// `ln x`
    pub fn log(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Log, x)
    }
    /// `√x`
    pub fn sqrt(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sqrt, x)
    }
    /// `x²`
    pub fn square(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Square, x)
    }
    /// `x^p` for a constant exponent.
    pub fn powf(&mut self, x: NodeId, p: f32) -> Result<NodeId> {
        self.unary(UnaryOp::PowScalar(p), x)
    }
    /// `|x|`
    pub fn abs(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Abs, x)
    }
    /// `sign(x)`
    pub fn sign(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Sign, x)
    }
    /// `1/x`
    pub fn recip(&mut self, x: NodeId) -> Result<NodeId> {
        self.unary(UnaryOp::Recip, x)
    }
    /// `x + c`
    pub fn add_scalar(&mut self, x: NodeId, c: f32) -> Result<NodeId> {
        self.unary(UnaryOp::AddScalar(c), x)
    }
    /// `c·x`
    pub fn mul_scalar(&mut self, x: NodeId, c: f32) -> Result<NodeId> {
        self.unary(UnaryOp::MulScalar(c), x)
    }
    /// `min(max(x, lo), hi)`
    pub fn clamp(&mut self, x: NodeId, lo: f32, hi: f32) -> Result<NodeId> {
        self.unary(UnaryOp::Clamp(lo, hi), x)
    }

    // ----- reductions ---------------------------------------------------------------------

    /// Reduce over `axes` (negative axes count from the end).
    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        self.check_ids("reduce", &[x])?;
        let s = self.shape(x).clone();
        let mut ax = Vec::with_capacity(axes.len());
        for &a in axes {
            let r = s.rank() as isize;
            let a2 = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a2) {
                return Err(shape_err(
                    "reduce",
                    self.describe_new(&[x]),
                    vec![&s],
                    format!("axis {a} is out of range for rank {r}"),
                ));
            }
            if ax.contains(&(a2 as usize)) {
                return Err(shape_err(
                    "reduce",
                    self.describe_new(&[x]),
                    vec![&s],
                    format!("axis {a} is given twice"),
                ));
            }
            ax.push(a2 as usize);
        }
        ax.sort_unstable();
        let dims: Vec<usize> =
            s.0.iter()
                .enumerate()
                .filter_map(|(i, &d)| match (ax.contains(&i), keepdim) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
        self.push(Op::Reduce { op, axes: ax, keepdim }, vec![x], Shape(dims))
    }

    /// Sum over `axes`.
    pub fn sum(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Sum, x, axes, keepdim)
    }
    /// Mean over `axes`.
    pub fn mean(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Mean, x, axes, keepdim)
    }
    /// Maximum over `axes`.
    pub fn max(&mut self, x: NodeId, axes: &[isize], keepdim: bool) -> Result<NodeId> {
        self.reduce(ReduceOp::Max, x, axes, keepdim)
    }
    /// Sum of every element, as a scalar.
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let axes: Vec<isize> = (0..self.shape(x).rank() as isize).collect();
        self.reduce(ReduceOp::Sum, x, &axes, false)
    }
    /// Mean of every element, as a scalar.
    pub fn mean_all(&mut self, x: NodeId) -> Result<NodeId> {
        let axes: Vec<isize> = (0..self.shape(x).rank() as isize).collect();
        self.reduce(ReduceOp::Mean, x, &axes, false)
    }

    /// Sum `x` down to `shape`, undoing a broadcast from `shape` (used by gradient rules).
    pub(crate) fn sum_to(&mut self, x: NodeId, shape: &Shape) -> Result<NodeId> {
        let xs = self.shape(x).clone();
        if &xs == shape {
            return Ok(x);
        }
        let axes: Vec<isize> = crate::shape::broadcast_axes(shape, &xs)
            .iter()
            .map(|&a| a as isize)
            .collect();
        let r = self.reduce(ReduceOp::Sum, x, &axes, false)?;
        if self.shape(r) == shape {
            Ok(r)
        } else {
            self.reshape(r, shape.clone())
        }
    }

    /// Broadcast `x` to `shape`.
    pub fn broadcast_to(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        self.check_ids("broadcast_to", &[x])?;
        let shape = shape.into();
        let s = self.shape(x).clone();
        if broadcast_shapes(&s, &shape).as_ref() != Some(&shape) {
            return Err(shape_err(
                "broadcast_to",
                self.describe_new(&[x]),
                vec![&s, &shape],
                "the first shape does not broadcast to the second",
            ));
        }
        if s == shape {
            return Ok(x);
        }
        // A constant broadcast is a constant, while small enough that storing it costs less
        // than the kernel that would write it each step.
        if let (Some(v), true) = (self.constant_of(x), shape.numel() <= FOLD_BROADCAST) {
            let dtype = self.dtype(x);
            return Ok(self.constant_typed(v, shape, dtype));
        }
        self.push(Op::BroadcastTo, vec![x], shape)
    }

    // ----- layout -------------------------------------------------------------------------

    /// The same elements with a new shape.
    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId> {
        self.check_ids("reshape", &[x])?;
        let shape = shape.into();
        let s = self.shape(x).clone();
        if s.numel() != shape.numel() {
            return Err(shape_err(
                "reshape",
                self.describe_new(&[x]),
                vec![&s, &shape],
                format!("{} elements cannot be viewed as {}", s.numel(), shape.numel()),
            ));
        }
        if s == shape {
            return Ok(x);
        }
        if let Some(v) = self.constant_of(x) {
            let dtype = self.dtype(x);
            return Ok(self.constant_typed(v, shape, dtype));
        }
        self.push(Op::Reshape, vec![x], shape)
    }

    /// Reorder axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.check_ids("permute", &[x])?;
        let s = self.shape(x).clone();
        let mut seen = vec![false; s.rank()];
        if perm.len() != s.rank()
            || perm
                .iter()
                .any(|&p| p >= s.rank() || std::mem::replace(&mut seen[p], true))
        {
            return Err(shape_err(
                "permute",
                self.describe_new(&[x]),
                vec![&s],
                format!("{perm:?} is not a permutation of the axes"),
            ));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        let out = Shape(perm.iter().map(|&p| s.0[p]).collect());
        self.push(Op::Permute { perm: perm.to_vec() }, vec![x], out)
    }

    /// Swap the last two axes.
    pub fn transpose(&mut self, x: NodeId) -> Result<NodeId> {
        self.check_ids("transpose", &[x])?;
        let r = self.shape(x).rank();
        if r < 2 {
            return Err(shape_err(
                "transpose",
                self.describe_new(&[x]),
                vec![self.shape(x)],
                "needs rank at least 2",
            ));
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, &perm)
    }

    /// Join tensors along `axis`; all other dimensions must agree.
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        self.check_ids("concat", xs)?;
        if xs.is_empty() {
            return crate::error::invalid("concat", "needs at least one tensor");
        }
        let shapes: Vec<Shape> = xs.iter().map(|&x| self.shape(x).clone()).collect();
        let first = &shapes[0];
        let ok = axis < first.rank()
            && shapes
                .iter()
                .all(|s| s.rank() == first.rank() && (0..s.rank()).all(|i| i == axis || s.0[i] == first.0[i]));
        if !ok {
            return Err(shape_err(
                "concat",
                self.describe_new(xs),
                shapes.iter().collect(),
                format!("shapes differ outside axis {axis}, or the axis is out of range"),
            ));
        }
        let mut out = first.clone();
        out.0[axis] = shapes.iter().map(|s| s.0[axis]).sum();
        self.push(Op::Concat { axis }, xs.to_vec(), out)
    }

    /// Elements `start..end` along `axis`.
    pub fn slice(&mut self, x: NodeId, axis: usize, start: usize, end: usize) -> Result<NodeId> {
        self.check_ids("slice", &[x])?;
        let s = self.shape(x).clone();
        if axis >= s.rank() || start >= end || end > s.0[axis] {
            return Err(shape_err(
                "slice",
                self.describe_new(&[x]),
                vec![&s],
                format!("range {start}..{end} on axis {axis} is empty or out of bounds"),
            ));
        }
        let mut out = s.clone();
        out.0[axis] = end - start;
        if out == s {
            return Ok(x);
        }
        self.push(Op::Slice { axis, start, end }, vec![x], out)
    }

    /// Zero-pad along `axis`.
    pub(crate) fn pad(&mut self, x: NodeId, axis: usize, before: usize, after: usize) -> Result<NodeId> {
        let mut out = self.shape(x).clone();
        out.0[axis] += before + after;
        self.push(Op::Pad { axis, before, after }, vec![x], out)
    }

    // ----- linear algebra -----------------------------------------------------------------

    /// `a @ b`.
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.matmul_t(a, b, false, false)
    }

    /// `op(a) @ op(b)` where `op` transposes the last two axes when its flag is set.
    /// `a` is `(..., M, K)` and `b` is `(..., K, N)` with the same leading axes, or either one
    /// has rank 2 and is shared by every batch of the other.
    pub fn matmul_t(&mut self, a: NodeId, b: NodeId, ta: bool, tb: bool) -> Result<NodeId> {
        self.check_ids("matmul", &[a, b])?;
        let (sa, sb) = (self.shape(a).clone(), self.shape(b).clone());
        let err = |g: &Self, why: String| shape_err("matmul", g.describe_new(&[a, b]), vec![&sa, &sb], why);
        if sa.rank() < 2 || sb.rank() < 2 {
            return Err(err(self, "both operands need rank at least 2".into()));
        }
        let (ra, rb) = (sa.rank(), sb.rank());
        let (m, ka) = if ta {
            (sa.0[ra - 1], sa.0[ra - 2])
        } else {
            (sa.0[ra - 2], sa.0[ra - 1])
        };
        let (kb, n) = if tb {
            (sb.0[rb - 1], sb.0[rb - 2])
        } else {
            (sb.0[rb - 2], sb.0[rb - 1])
        };
        if ka != kb {
            return Err(err(self, format!("inner dimensions differ ({ka} vs {kb})")));
        }
        if ra != 2 && rb != 2 && sa.0[..ra - 2] != sb.0[..rb - 2] {
            return Err(err(self, "batch dimensions differ".into()));
        }
        let mut out = if ra >= rb {
            sa.0[..ra - 2].to_vec()
        } else {
            sb.0[..rb - 2].to_vec()
        };
        out.extend([m, n]);
        self.push(Op::MatMul { ta, tb }, vec![a, b], Shape(out))
    }

    // ----- softmax family -----------------------------------------------------------------

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.softmax_like(Op::Softmax, x)
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&mut self, x: NodeId) -> Result<NodeId> {
        self.softmax_like(Op::LogSoftmax, x)
    }

    fn softmax_like(&mut self, op: Op, x: NodeId) -> Result<NodeId> {
        self.check_ids(op.name(), &[x])?;
        let s = self.shape(x).clone();
        if s.rank() == 0 {
            return Err(shape_err(
                op.name(),
                self.describe_new(&[x]),
                vec![&s],
                "needs rank at least 1",
            ));
        }
        self.push(op, vec![x], s)
    }

    /// Per-row softmax cross-entropy: logits `(N, C)`, labels `(N)` → losses `(N)`.
    pub fn softmax_cross_entropy(&mut self, logits: NodeId, labels: NodeId, smoothing: f32) -> Result<NodeId> {
        self.check_ids("softmax_cross_entropy", &[logits, labels])?;
        let (sl, sy) = (self.shape(logits).clone(), self.shape(labels).clone());
        self.check_labels("softmax_cross_entropy", labels, logits)?;
        if !(0.0..1.0).contains(&smoothing) {
            return crate::error::invalid(
                "softmax_cross_entropy",
                format!("label smoothing must be in [0, 1), got {smoothing}"),
            );
        }
        if sl.rank() != 2 || sy.rank() != 1 || sy.0[0] != sl.0[0] {
            return Err(shape_err(
                "softmax_cross_entropy",
                self.describe_new(&[logits, labels]),
                vec![&sl, &sy],
                "expected logits (N, C) and labels (N)",
            ));
        }
        self.push(
            Op::SoftmaxCrossEntropy { smoothing },
            vec![logits, labels],
            Shape(vec![sl.0[0]]),
        )
    }

    /// One-hot encoding of labels `(N)` as `(N, classes)`.
    pub fn one_hot(&mut self, labels: NodeId, classes: usize) -> Result<NodeId> {
        self.check_ids("one_hot", &[labels])?;
        let s = self.shape(labels).clone();
        if s.rank() != 1 || classes == 0 {
            return Err(shape_err(
                "one_hot",
                self.describe_new(&[labels]),
                vec![&s],
                "expected labels (N) and at least one class",
            ));
        }
        self.push(Op::OneHot { classes }, vec![labels], Shape(vec![s.0[0], classes]))
    }

    /// Labels must be a labels input whose class count matches the logits' last axis.
    fn check_labels(&self, op: &'static str, labels: NodeId, logits: NodeId) -> Result<()> {
        let c = self.shape(logits).dim(-1).unwrap_or(0);
        match &self.node(labels).op {
            Op::Input { classes: Some(k), .. } if *k == c => Ok(()),
            Op::Input { classes: Some(k), .. } => Err(shape_err(
                op,
                self.describe_new(&[logits, labels]),
                vec![self.shape(logits), self.shape(labels)],
                format!("labels have {k} classes but the logits have {c}"),
            )),
            _ => Err(shape_err(
                op,
                self.describe_new(&[logits, labels]),
                vec![self.shape(logits), self.shape(labels)],
                "the second operand must be a labels input (Graph::labels)",
            )),
        }
    }
}

fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Max => "maximum",
        BinaryOp::Min => "minimum",
        BinaryOp::Pow => "pow",
        BinaryOp::Greater => "greater",
        BinaryOp::GreaterEqual => "greater_equal",
        BinaryOp::Equal => "equal",
    }
}
