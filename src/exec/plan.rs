//! The printable plan of a compiled program: every kernel with its shapes, dtype, bytes and
//! storage, the buffer table, and the peak memory. `println!("{}", program.plan())`.

use super::memory::human;
use std::fmt;

/// Which part of a training step a kernel belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward and backward kernels (and gradient accumulation): run for every micro-batch.
    Gradients,
    /// Gradient statistics and the optimiser update: run once per update.
    Update,
}

/// One kernel of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStep {
    /// The node it computes (`#12 \`fc1.w\`` or `#12 (matmul)`), or what it does.
    pub what: String,
    /// The op or kernel name.
    pub op: &'static str,
    /// Operand shapes.
    pub inputs: Vec<Vec<usize>>,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Element type of the output.
    pub dtype: &'static str,
    /// Output bytes.
    pub bytes: usize,
    /// Buffer-table index of the output.
    pub buf: usize,
    /// Element offset of the output in its buffer.
    pub offset: usize,
    /// Per micro-batch, or per update.
    pub phase: Phase,
    /// The kernel that computes it: steps that share one were fused into it.
    pub kernel: usize,
}

/// One buffer of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanBuffer {
    /// What it holds.
    pub label: String,
    /// Its size.
    pub bytes: usize,
    /// Whether the ParamStore owns it (shared with the other programs) rather than the program.
    pub shared: bool,
}

/// A compiled program, as data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The kernels, in execution order.
    pub steps: Vec<PlanStep>,
    /// The buffer table.
    pub buffers: Vec<PlanBuffer>,
    /// Micro-batches per update (1 unless gradients accumulate; 0 for a program that never
    /// updates).
    pub accumulate: usize,
}

impl Plan {
    /// Kernels per step (fused steps count once).
    pub fn kernel_count(&self) -> usize {
        self.steps.last().map_or(0, |s| s.kernel + 1)
    }

    /// Bytes of the buffers the program owns.
    pub fn program_bytes(&self) -> usize {
        self.buffers.iter().filter(|b| !b.shared).map(|b| b.bytes).sum()
    }

    /// Bytes of the ParamStore buffers the program uses.
    pub fn store_bytes(&self) -> usize {
        self.buffers.iter().filter(|b| b.shared).map(|b| b.bytes).sum()
    }

    /// Every buffer is live for the whole step, so the peak is their sum.
    pub fn peak_bytes(&self) -> usize {
        self.program_bytes() + self.store_bytes()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: {} kernels for {} ops, peak {} ({} program, {} parameter store){}",
            self.kernel_count(),
            self.steps.len(),
            human(self.peak_bytes()),
            human(self.program_bytes()),
            human(self.store_bytes()),
            match self.accumulate {
                0 => String::new(),
                1 => ", one update per run".into(),
                k => format!(", one update per {k} micro-batches"),
            }
        )?;
        writeln!(f, "buffers:")?;
        for (i, b) in self.buffers.iter().enumerate() {
            writeln!(
                f,
                "  [{i:>2}] {:<28} {:>10}{}",
                b.label,
                human(b.bytes),
                if b.shared { "  (parameter store)" } else { "" }
            )?;
        }
        writeln!(f, "kernels:")?;
        let mut phase = None;
        for (i, s) in self.steps.iter().enumerate() {
            let fused = self.steps.iter().filter(|t| t.kernel == s.kernel).count() > 1;
            let first = i == 0 || self.steps[i - 1].kernel != s.kernel;
            if phase != Some(s.phase) {
                phase = Some(s.phase);
                writeln!(
                    f,
                    "  -- {} --",
                    match s.phase {
                        Phase::Gradients => "per run",
                        Phase::Update => "per update",
                    }
                )?;
            }
            let ins: Vec<String> = s.inputs.iter().map(|d| format!("{d:?}")).collect();
            writeln!(
                f,
                "  {:>4}{} {:<26} {:<22} {:<28} -> {:<18} {} {:>10} @[{}]+{}",
                if first { s.kernel.to_string() } else { String::new() },
                match (fused, first) {
                    (false, _) => " ",
                    (true, true) => "┬",
                    (true, false) => "└",
                },
                s.what,
                s.op,
                ins.join(" "),
                format!("{:?}", s.shape),
                s.dtype,
                human(s.bytes),
                s.buf,
                s.offset
            )?;
        }
        Ok(())
    }
}
