//! The error type every fallible Kiln call returns.
//!
//! Messages name the op, the node and the shapes involved, so a user can act on them without a
//! debugger.

use std::fmt;

/// Everything that can go wrong in Kiln because of what a caller asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An op was given operands whose shapes do not fit together.
    Shape {
        /// The op being built, e.g. `matmul`.
        op: &'static str,
        /// The node being built (its name when it has one).
        node: String,
        /// The operand shapes, as written by the user.
        shapes: Vec<Vec<usize>>,
        /// What is wrong with them.
        reason: String,
    },
    /// An op was given operands of element types it does not take.
    DType {
        /// The op being built.
        op: &'static str,
        /// The node being built.
        node: String,
        /// The operand element types.
        dtypes: Vec<crate::shape::DType>,
        /// What is wrong with them.
        reason: String,
    },
    /// An argument other than a shape is invalid (an axis out of range, a negative rate, ...).
    Invalid {
        /// Where it was passed.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A feed named an input the program does not have.
    UnknownFeed {
        /// The name fed.
        name: String,
        /// The inputs the program does have.
        known: Vec<String>,
    },
    /// A feed had the wrong number of elements for its input.
    FeedSize {
        /// The input's name.
        name: String,
        /// The input's shape.
        shape: Vec<usize>,
        /// How many elements were given.
        got: usize,
    },
    /// An input the program needs was not fed.
    MissingFeed {
        /// The input's name.
        name: String,
    },
    /// A class label is outside `0..classes`.
    Label {
        /// The input's name.
        name: String,
        /// The offending label.
        label: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A node id does not belong to the graph, or a fetch is not part of the program.
    UnknownNode(String),
    /// A gradient was asked for something that is not differentiable.
    NotDifferentiable(String),
    /// The backend failed (device lost, allocation failed, a limit exceeded, ...).
    Backend(String),
    /// A file could not be read or written, or its contents are corrupt.
    Io(String),
    /// Training diverged: the loss or a gradient became NaN or infinite.
    NonFinite(String),
    /// A program would not fit the device's limits or the memory budget.
    OutOfMemory(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                op,
                node,
                shapes,
                reason,
            } => {
                write!(f, "{op} (node {node}): {reason}; operand shapes ")?;
                for (i, s) in shapes.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{s:?}")?;
                }
                Ok(())
            }
            Error::DType {
                op,
                node,
                dtypes,
                reason,
            } => {
                let d: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
                write!(f, "{op} (node {node}): {reason}; operand types {}", d.join(", "))
            }
            Error::Invalid { op, reason } => write!(f, "{op}: {reason}"),
            Error::UnknownFeed { name, known } => {
                write!(f, "unknown feed `{name}`; the program's inputs are {known:?}")
            }
            Error::FeedSize { name, shape, got } => write!(
                f,
                "feed `{name}` has {got} elements but input shape {shape:?} needs {}",
                shape.iter().product::<usize>()
            ),
            Error::MissingFeed { name } => write!(f, "input `{name}` was not fed"),
            Error::Label { name, label, classes } => {
                write!(f, "feed `{name}`: label {label} is not in 0..{classes}")
            }
            Error::UnknownNode(m) => write!(f, "unknown node: {m}"),
            Error::NotDifferentiable(m) => write!(f, "not differentiable: {m}"),
            Error::Backend(m) => write!(f, "backend: {m}"),
            Error::Io(m) => write!(f, "io: {m}"),
            Error::NonFinite(m) => write!(f, "non-finite value: {m}"),
            Error::OutOfMemory(m) => write!(f, "out of memory: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// Kiln's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error::Invalid`].
pub(crate) fn invalid<T>(op: &'static str, reason: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        reason: reason.into(),
    })
}
