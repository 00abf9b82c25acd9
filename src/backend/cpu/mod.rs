//! The CPU reference backend: plain, readable Rust for every kernel, so that each GPU kernel has
//! something obviously correct to be checked against. Matrix products go through the
//! `matrixmultiply` crate's blocked SGEMM.

mod kernels;

use super::{Backend, DeviceInfo, Kernel, MemoryLimits, StepUniforms, View};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex, MutexGuard};

/// The CPU reference backend.
#[derive(Clone, Debug, Default)]
pub struct Cpu;

/// A host buffer; clones share it.
#[derive(Clone, Debug)]
pub struct CpuBuffer(Arc<Mutex<Vec<f32>>>);

impl CpuBuffer {
    fn lock(&self) -> Result<MutexGuard<'_, Vec<f32>>> {
        self.0
            .lock()
            .map_err(|_| Error::Backend("a CPU buffer's lock was poisoned by a panic".into()))
    }
}

/// A kernel list with its buffer table.
pub struct CpuProgram {
    buffers: Vec<CpuBuffer>,
    kernels: Vec<Kernel>,
}

fn check_view(v: &View, len: usize, what: &str) -> Result<()> {
    if v.offset + v.len > len {
        return Err(Error::Backend(format!(
            "{what}: view {v:?} overruns a buffer of {len} elements"
        )));
    }
    Ok(())
}

impl Backend for Cpu {
    type Buffer = CpuBuffer;
    type Program = CpuProgram;

    fn info(&self) -> DeviceInfo {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        DeviceInfo {
            backend: "cpu".into(),
            adapter: format!("CPU reference ({threads} threads)"),
        }
    }

    fn memory_limits(&self) -> MemoryLimits {
        MemoryLimits {
            max_buffer: isize::MAX as usize,
            total: available_memory(),
        }
    }

    fn alloc(&self, len: usize, _label: &str) -> Result<CpuBuffer> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| Error::Backend(format!("cannot allocate {len} f32 elements")))?;
        v.resize(len, 0.0);
        Ok(CpuBuffer(Arc::new(Mutex::new(v))))
    }

    fn write(&self, buf: &CpuBuffer, offset: usize, data: &[f32]) -> Result<()> {
        let mut b = buf.lock()?;
        check_view(
            &View {
                buf: 0,
                offset,
                len: data.len(),
            },
            b.len(),
            "write",
        )?;
        b[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, buf: &CpuBuffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        let b = buf.lock()?;
        check_view(&View { buf: 0, offset, len }, b.len(), "read")?;
        Ok(b[offset..offset + len].to_vec())
    }

    fn prepare(&self, buffers: Vec<CpuBuffer>, kernels: Vec<Kernel>) -> Result<CpuProgram> {
        let lens: Vec<usize> = buffers
            .iter()
            .map(|b| b.lock().map(|g| g.len()))
            .collect::<Result<_>>()?;
        for k in &kernels {
            let (ins, out) = kernel_views(k);
            for v in ins.iter().chain(out.iter()) {
                let len = *lens
                    .get(v.buf)
                    .ok_or_else(|| Error::Backend(format!("view {v:?} names no buffer")))?;
                check_view(v, len, "prepare")?;
            }
        }
        Ok(CpuProgram { buffers, kernels })
    }

    fn execute(&self, p: &mut CpuProgram, u: &StepUniforms, fetch: &[View]) -> Result<Vec<Vec<f32>>> {
        let mut guards: Vec<MutexGuard<'_, Vec<f32>>> = p.buffers.iter().map(|b| b.lock()).collect::<Result<_>>()?;
        for k in &p.kernels {
            run_kernel(k, &mut guards, u)?;
        }
        Ok(fetch
            .iter()
            .map(|v| guards[v.buf][v.offset..v.offset + v.len].to_vec())
            .collect())
    }
}

/// Memory the operating system can still hand out (Linux's `MemAvailable`), if known.
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The views a kernel reads, and the ones it writes.
fn kernel_views(k: &Kernel) -> (Vec<View>, Vec<View>) {
    match k {
        Kernel::Op { inputs, out, .. } => (inputs.clone(), vec![*out]),
        Kernel::Copy { src, dst } => (vec![*src], vec![*dst]),
        Kernel::GradStats { src, check, out } => (src.iter().chain(check).copied().collect(), vec![*out]),
        Kernel::AddInto { src, dst } => (vec![*src, *dst], vec![*dst]),
        Kernel::Fill { dst, .. } => (vec![], vec![*dst]),
        Kernel::Update(u) => (vec![u.stats], vec![]),
    }
}

/// Run one kernel. The output buffer is moved out of the table while the kernel runs, so inputs
/// can be borrowed from the rest; inputs that live in the output's own buffer are copied first.
fn run_kernel(k: &Kernel, bufs: &mut [MutexGuard<'_, Vec<f32>>], u: &StepUniforms) -> Result<()> {
    match k {
        Kernel::Update(up) => kernels::update(up, bufs, u),
        Kernel::Op { .. }
        | Kernel::Copy { .. }
        | Kernel::GradStats { .. }
        | Kernel::AddInto { .. }
        | Kernel::Fill { .. } => {
            let (ins, outs) = kernel_views(k);
            let out = outs[0];
            let copies: Vec<Option<Vec<f32>>> = ins
                .iter()
                .map(|v| (v.buf == out.buf).then(|| bufs[v.buf][v.offset..v.offset + v.len].to_vec()))
                .collect();
            let mut out_buf = std::mem::take(&mut *bufs[out.buf]);
            let result = {
                let slices: Vec<&[f32]> = ins
                    .iter()
                    .zip(&copies)
                    .map(|(v, c)| match c {
                        Some(c) => c.as_slice(),
                        None => &bufs[v.buf][v.offset..v.offset + v.len],
                    })
                    .collect();
                let o = &mut out_buf[out.offset..out.offset + out.len];
                match k {
                    Kernel::Op {
                        op,
                        in_shapes,
                        out_shape,
                        node,
                        ..
                    } => kernels::op(op, &slices, in_shapes, o, out_shape, u)
                        .map_err(|e| Error::Backend(format!("node #{} ({}): {e}", node.index(), op.name()))),
                    Kernel::Copy { .. } => {
                        o.copy_from_slice(slices[0]);
                        Ok(())
                    }
                    Kernel::GradStats { src, .. } => {
                        let (grads, checked) = slices.split_at(src.len());
                        let s: f64 = grads
                            .iter()
                            .flat_map(|s| s.iter())
                            .map(|&x| (x as f64) * (x as f64))
                            .sum();
                        let bad = grads
                            .iter()
                            .chain(checked)
                            .flat_map(|s| s.iter())
                            .filter(|x| !x.is_finite())
                            .count();
                        o[0] = s as f32;
                        o[1] = bad as f32;
                        Ok(())
                    }
                    Kernel::AddInto { .. } => {
                        // slices[1] is the old `dst` (copied, as it lives in the output buffer).
                        for ((o, &a), &b) in o.iter_mut().zip(slices[0]).zip(slices[1]) {
                            *o = b + a;
                        }
                        Ok(())
                    }
                    Kernel::Fill { value, .. } => {
                        o.fill(*value);
                        Ok(())
                    }
                    Kernel::Update(_) => unreachable!("handled above"),
                }
            };
            *bufs[out.buf] = out_buf;
            result
        }
    }
}
