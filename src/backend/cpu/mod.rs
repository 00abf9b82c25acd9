//! The CPU reference backend: plain, readable Rust for every kernel, so that each GPU kernel has
//! something obviously correct to be checked against. Matrix products go through the
//! `gemm` crate's blocked SGEMM.
//!
//! Buffers are 4-byte words. Kernels compute in f32: operands of other types are widened on the
//! way in (u32 exactly below 2²⁴, f16 exactly) and results narrowed on the way out (f16 rounds
//! to nearest even, u32 truncates), so an f16 tensor holds here exactly what a GPU that stores
//! f16 holds.

mod kernels;

use super::{dead_after, kernel_views, overlap, Backend, DeviceInfo, Kernel, MemoryLimits, StepUniforms, View};
use crate::error::{Error, Result};
use crate::graph::Op;
use crate::shape::DType;
use half::f16;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

/// The CPU reference backend.
#[derive(Clone, Debug, Default)]
pub struct Cpu;

/// A host buffer of 4-byte words (held as f32, whatever they encode); clones share it.
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
    /// For each kernel, whether it starts a convolution pair run image by image with the next
    /// ([`kernels::conv_pair`]); the next is then skipped.
    pairs: Vec<Option<kernels::ConvPair>>,
    /// For each backward pair, whether its intermediate (the columns Wᵀ·dy) is dead once the
    /// pair has run ([`dead_after`]), so it may live in per-thread scratch instead of memory.
    scratch: Vec<bool>,
    /// With `KILN_PROFILE=1`: seconds and runs of each kernel, reported when the program drops.
    profile: Option<Vec<(f64, usize)>>,
}

impl Drop for CpuProgram {
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_ref().filter(|p| p.iter().any(|&(_, runs)| runs > 0)) {
            eprint!("{}", profile_report(&self.kernels, &self.pairs, &self.scratch, p));
        }
    }
}

/// A kernel's name in the profile: the op (a fused run's ops, in order) and its shape.
fn profile_label(k: &Kernel) -> String {
    match k {
        Kernel::Op {
            op,
            out_shape,
            in_shapes,
            ..
        } => {
            let ins: Vec<String> = in_shapes.iter().map(|s| format!("{:?}", s.0)).collect();
            format!("{} {:?} <- {}", op.name(), out_shape.0, ins.join(" "))
        }
        Kernel::Fused(f) => {
            let ops: Vec<&str> = f.body.iter().map(|(op, _)| op.name()).collect();
            format!("fused[{}] {:?}", ops.join(","), f.shape.0)
        }
        Kernel::Copy { dst, .. } => format!("copy {}", dst.len),
        Kernel::GradStats { .. } => "grad_stats".into(),
        Kernel::AddInto { dst, .. } => format!("add_into {}", dst.len),
        Kernel::CopyIfFinite { dst, .. } => format!("copy_if_finite {}", dst.len),
        Kernel::Fill { dst, .. } => format!("fill {}", dst.len),
        Kernel::Update(_) => "update".into(),
    }
}

/// `KILN_PROFILE=1`'s report for the CPU backend: seconds per kernel kind and shape (kernels with
/// the same label summed), slowest first, down to 99% of the time.
fn profile_report(
    kernels: &[Kernel],
    pairs: &[Option<kernels::ConvPair>],
    scratch: &[bool],
    p: &[(f64, usize)],
) -> String {
    use std::fmt::Write;
    let mut sums: std::collections::HashMap<String, (f64, usize)> = Default::default();
    for (i, (k, &(s, n))) in kernels.iter().zip(p).enumerate() {
        if n == 0 {
            continue;
        }
        let label = match pairs[i] {
            Some(pair) => format!(
                "{pair:?} pair{}: {} then {}",
                if scratch[i] { " (columns in scratch)" } else { "" },
                profile_label(k),
                profile_label(&kernels[i + 1])
            ),
            None => profile_label(k),
        };
        let e = sums.entry(label).or_default();
        e.0 += s;
        e.1 += n;
    }
    let total: f64 = p.iter().map(|&(s, _)| s).sum();
    let mut rows: Vec<_> = sums.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let mut out = format!("KILN_PROFILE (cpu): {} kernels, {total:.4} s\n", kernels.len());
    let mut seen = 0.0;
    for (label, (s, n)) in rows {
        if seen > 0.99 * total {
            break;
        }
        seen += s;
        let _ = writeln!(
            out,
            "  {:>9.4}s {:>5.1}% {:>7}  {label}",
            s,
            100.0 * s / total.max(1e-12),
            n
        );
    }
    out
}

fn check_range(offset: usize, bytes: usize, words: usize, what: &str) -> Result<()> {
    if !offset.is_multiple_of(4) || offset + bytes > 4 * words {
        return Err(Error::Backend(format!(
            "{what}: {bytes} bytes at offset {offset} do not fit a buffer of {} bytes (offsets are multiples of 4)",
            4 * words
        )));
    }
    Ok(())
}

/// The bytes of view `v` in `words`.
fn bytes_of<'a>(words: &'a [f32], v: &View) -> &'a [u8] {
    &bytemuck::cast_slice::<f32, u8>(words)[v.offset..v.offset + v.bytes()]
}

/// The elements of `v` as f32: borrowed when they are f32, widened otherwise. With `bits`, u32
/// elements keep their bit pattern instead of their value, for kernels that only move data
/// (so ids of 2²⁴ and more survive a reshape or a slice exactly).
fn widen<'a>(words: &'a [f32], v: &View, bits: bool) -> Cow<'a, [f32]> {
    let b = bytes_of(words, v);
    match v.dtype {
        DType::F32 => Cow::Borrowed(bytemuck::cast_slice(b)),
        DType::F16 => Cow::Owned(bytemuck::cast_slice::<u8, f16>(b).iter().map(|h| h.to_f32()).collect()),
        DType::U32 if bits => Cow::Borrowed(bytemuck::cast_slice(b)),
        DType::U32 => Cow::Owned(bytemuck::cast_slice::<u8, u32>(b).iter().map(|&i| i as f32).collect()),
    }
}

/// Store f32 results into view `v` of `words`, narrowing to its type (`bits`: see [`widen`]).
fn narrow(words: &mut [f32], v: &View, vals: &[f32], bits: bool) {
    let b = &mut bytemuck::cast_slice_mut::<f32, u8>(words)[v.offset..v.offset + v.bytes()];
    match v.dtype {
        DType::F32 => b.copy_from_slice(bytemuck::cast_slice(vals)),
        DType::F16 => {
            for (o, &x) in bytemuck::cast_slice_mut::<u8, f16>(b).iter_mut().zip(vals) {
                *o = f16::from_f32(x);
            }
        }
        DType::U32 if bits => b.copy_from_slice(bytemuck::cast_slice(vals)),
        DType::U32 => {
            // `as` truncates toward zero and saturates; NaN gives 0.
            for (o, &x) in bytemuck::cast_slice_mut::<u8, u32>(b).iter_mut().zip(vals) {
                *o = x as u32;
            }
        }
    }
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

    fn alloc(&self, bytes: usize, _label: &str) -> Result<CpuBuffer> {
        let words = bytes.div_ceil(4);
        let mut v = Vec::new();
        v.try_reserve_exact(words)
            .map_err(|_| Error::Backend(format!("cannot allocate {bytes} bytes")))?;
        v.resize(words, 0.0);
        Ok(CpuBuffer(Arc::new(Mutex::new(v))))
    }

    fn write(&self, buf: &CpuBuffer, offset: usize, data: &[u8]) -> Result<()> {
        let mut b = buf.lock()?;
        check_range(offset, data.len(), b.len(), "write")?;
        bytemuck::cast_slice_mut::<f32, u8>(&mut b)[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, buf: &CpuBuffer, offset: usize, bytes: usize) -> Result<Vec<u8>> {
        let b = buf.lock()?;
        check_range(offset, bytes, b.len(), "read")?;
        Ok(bytemuck::cast_slice::<f32, u8>(&b)[offset..offset + bytes].to_vec())
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
                check_range(v.offset, v.bytes(), len, "prepare")?;
            }
        }
        let profile = (std::env::var("KILN_PROFILE").as_deref() == Ok("1")).then(|| vec![(0.0, 0); kernels.len()]);
        let mut pairs = vec![None; kernels.len()];
        let mut i = 0;
        while i + 1 < kernels.len() {
            pairs[i] = conv_pair(&kernels[i], &kernels[i + 1]);
            i += if pairs[i].is_some() { 2 } else { 1 };
        }
        let scratch = (0..kernels.len())
            .map(|i| {
                pairs[i] == Some(kernels::ConvPair::Backward)
                    && kernel_views(&kernels[i])
                        .1
                        .first()
                        .is_some_and(|v| dead_after(&kernels, i + 1, v))
            })
            .collect();
        Ok(CpuProgram {
            buffers,
            kernels,
            pairs,
            scratch,
            profile,
        })
    }

    fn execute(&self, p: &mut CpuProgram, u: &StepUniforms, fetch: &[View]) -> Result<Vec<Vec<u8>>> {
        let mut guards: Vec<MutexGuard<'_, Vec<f32>>> = p.buffers.iter().map(|b| b.lock()).collect::<Result<_>>()?;
        let mut i = 0;
        while i < p.kernels.len() {
            let t = p.profile.is_some().then(std::time::Instant::now);
            match p.pairs[i] {
                Some(pair) => {
                    // A fetched intermediate is kept in memory.
                    let scratch = p.scratch[i]
                        && kernel_views(&p.kernels[i])
                            .1
                            .iter()
                            .all(|v| !fetch.iter().any(|f| overlap(f, v)));
                    run_pair(pair, scratch, &p.kernels[i], &p.kernels[i + 1], &mut guards)?
                }
                None => run_kernel(&p.kernels[i], &mut guards, u)?,
            }
            if let (Some(t), Some(prof)) = (t, p.profile.as_mut()) {
                prof[i].0 += t.elapsed().as_secs_f64();
                prof[i].1 += 1;
            }
            i += if p.pairs[i].is_some() { 2 } else { 1 };
        }
        Ok(fetch.iter().map(|v| bytes_of(&guards[v.buf], v).to_vec()).collect())
    }
}

/// Memory the operating system can still hand out (Linux's `MemAvailable`), if known.
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether kernels `a` then `b` are one convolution's unfold and product (or product and fold)
/// that [`kernels::conv_pair`] can run image by image with the same results: f32 throughout, the
/// second reading exactly the first's output, small products (one single-threaded task per
/// image in `matmul` too), and no output overlapping any operand of the pair, so interleaving
/// the images changes nothing either reads.
fn conv_pair(a: &Kernel, b: &Kernel) -> Option<kernels::ConvPair> {
    use kernels::ConvPair;
    let (
        Kernel::Op {
            op: op_a,
            inputs: in_a,
            in_shapes: sh_a,
            out: out_a,
            out_shape: os_a,
            ..
        },
        Kernel::Op {
            op: op_b,
            inputs: in_b,
            in_shapes: sh_b,
            out: out_b,
            out_shape: os_b,
            ..
        },
    ) = (a, b)
    else {
        return None;
    };
    let kind = match (op_a, op_b) {
        (Op::Im2Col(w1), Op::MatMul { ta: false, tb: false })
            if in_a.len() == 1 && in_b.len() == 2 && in_b[1] == *out_a =>
        {
            let (x, wm) = (&sh_a[0], &sh_b[0]);
            if !(x.rank() == 4 && wm.rank() == 2 && os_a.rank() == 3) {
                return None;
            }
            let (o, ckk, l) = (wm.0[0], os_a.0[1], os_a.0[2]);
            let fits = wm.0[1] == ckk
                && sh_b[1] == *os_a
                && os_b.0 == [x.0[0], o, l]
                && kernels::batch_tasks(x.0[0], o, ckk, l);
            let grid = w1.output(x.0[2], x.0[3]).map(|(oh, ow)| oh * ow);
            let fits = fits && grid == Some(l) && ckk == x.0[1] * w1.k[0] * w1.k[1] && os_a.0[0] == x.0[0];
            fits.then_some(ConvPair::Forward)?
        }
        (Op::MatMul { ta: true, tb: false }, Op::Col2Im(w2))
            if in_a.len() == 2 && in_b.len() == 1 && in_b[0] == *out_a =>
        {
            let (wm, dy, dx) = (&sh_a[0], &sh_a[1], os_b);
            let fits = wm.rank() == 2
                && dy.rank() == 3
                && dx.rank() == 4
                && dy.0[1] == wm.0[0]
                && os_a.0 == [dy.0[0], wm.0[1], dy.0[2]]
                && sh_b[0] == *os_a
                && kernels::batch_tasks(dy.0[0], wm.0[1], wm.0[0], dy.0[2]);
            if !fits {
                return None;
            }
            let grid = w2.output(dx.0[2], dx.0[3]).map(|(oh, ow)| oh * ow);
            let fits = grid == Some(dy.0[2]) && wm.0[1] == dx.0[1] * w2.k[0] * w2.k[1] && dx.0[0] == dy.0[0];
            fits.then_some(ConvPair::Backward)?
        }
        _ => return None,
    };
    let views: Vec<View> = in_a.iter().chain(in_b.iter()).chain([out_a, out_b]).copied().collect();
    if views.iter().any(|v| v.dtype != DType::F32) {
        return None;
    }
    // Whole, contiguous tensors: the kernel addresses each image from the view's start.
    let whole = |v: &View, s: &crate::Shape| v.len == s.numel();
    let (weights, weights_shape) = match kind {
        ConvPair::Forward => (&in_b[0], &sh_b[0]),
        ConvPair::Backward => (&in_a[0], &sh_a[0]),
    };
    if !(whole(&in_a[0], &sh_a[0])
        && (in_a.len() < 2 || whole(&in_a[1], &sh_a[1]))
        && whole(weights, weights_shape)
        && whole(out_a, os_a)
        && whole(out_b, os_b))
    {
        return None;
    }
    // Every operand of the pair against both outputs (the intermediate is an output and an
    // operand); the final output may lie exactly on the per-image operand (x forward, dy
    // backward) when their images are of one size, which `kernels::conv_pair` allows.
    let disjoint = |v: &View, w: &View| !overlap(v, w);
    let per_image = match kind {
        ConvPair::Forward => in_a[0],
        ConvPair::Backward => in_a[1],
    };
    // The weights (an operand of the forward pass's second kernel) overlap neither output.
    let ok = in_a
        .iter()
        .all(|v| disjoint(v, out_a) && (disjoint(v, out_b) || (*v == per_image && *v == *out_b)))
        && disjoint(weights, out_a)
        && disjoint(weights, out_b)
        && disjoint(out_a, out_b);
    ok.then_some(kind)
}

/// Run a convolution pair (see [`conv_pair`]) on the buffers.
fn run_pair(
    pair: kernels::ConvPair,
    scratch: bool,
    a: &Kernel,
    b: &Kernel,
    bufs: &mut [MutexGuard<'_, Vec<f32>>],
) -> Result<()> {
    let (
        Kernel::Op {
            op,
            inputs,
            in_shapes,
            out: cols,
            node,
            ..
        },
        Kernel::Op {
            op: op_b,
            inputs: in_b,
            in_shapes: sh_b,
            out,
            out_shape,
            ..
        },
    ) = (a, b)
    else {
        return Err(Error::Backend("a convolution pair of non-op kernels".into()));
    };
    // The window, the image shape, the output channels, the per-image operand and the weights.
    let (win, image, o, per_image, weights) = match (pair, op, op_b) {
        (kernels::ConvPair::Forward, Op::Im2Col(w), _) => (w, &in_shapes[0], sh_b[0].0[0], inputs[0], in_b[0]),
        (kernels::ConvPair::Backward, _, Op::Col2Im(w)) => (w, out_shape, in_shapes[0].0[0], inputs[1], inputs[0]),
        _ => return Err(Error::Backend("mismatched convolution pair".into())),
    };
    let x = &image.0;
    let ptrs: Vec<*mut f32> = bufs.iter_mut().map(|g| g.as_mut_ptr()).collect();
    // SAFETY: `prepare` checked every view against its buffer's length, and `conv_pair` (above)
    // that the weights and the columns overlap nothing else of the pair and that the output
    // overlaps the per-image operand only exactly (the same view, so images of one size), as
    // `kernels::conv_pair` allows; those two go in as pointers, not borrows.
    let result = unsafe {
        let at = |v: &View| ptrs[v.buf].add(v.first());
        kernels::conv_pair(
            pair,
            win,
            [x[0], x[1], x[2], x[3]],
            o,
            at(&per_image),
            std::slice::from_raw_parts(at(&weights), weights.len),
            (!scratch).then(|| std::slice::from_raw_parts_mut(at(cols), cols.len)),
            at(out),
        )
    };
    result.map_err(|e| Error::Backend(format!("node #{} ({} pair): {e}", node.index(), op.name())))
}

/// Run one kernel. The output buffer is moved out of the table while the kernel runs, so inputs
/// can be borrowed from the rest; inputs that live in the output's own buffer, or that are not
/// f32, are copied (widened) first.
fn run_kernel(k: &Kernel, bufs: &mut [MutexGuard<'_, Vec<f32>>], u: &StepUniforms) -> Result<()> {
    if let Kernel::Update(up) = k {
        return kernels::update(up, bufs, u);
    }
    if let Kernel::Fused(f) = k {
        // Every view of a fused kernel is f32 (the fusion pass fuses nothing else).
        let cells: Vec<&[std::cell::Cell<f32>]> = bufs
            .iter_mut()
            .map(|g| std::cell::Cell::from_mut(&mut g[..]).as_slice_of_cells())
            .collect();
        kernels::fused(f, &cells);
        return Ok(());
    }
    let (ins, outs) = kernel_views(k);
    let out = outs[0];
    // Kernels that only move data carry u32 bit patterns untouched.
    let moves = match k {
        Kernel::Copy { .. } | Kernel::CopyIfFinite { .. } => true,
        Kernel::Op { op, .. } => matches!(
            op,
            Op::Reshape
                | Op::Permute { .. }
                | Op::BroadcastTo
                | Op::Slice { .. }
                | Op::Pad { .. }
                | Op::Concat { .. }
                | Op::StopGradient
        ),
        _ => false,
    };
    let owned: Vec<Option<Vec<f32>>> = ins
        .iter()
        .map(|v| (v.buf == out.buf || v.dtype != DType::F32).then(|| widen(&bufs[v.buf], v, moves).into_owned()))
        .collect();
    let mut out_buf = std::mem::take(&mut *bufs[out.buf]);
    let result = {
        let slices: Vec<&[f32]> = ins
            .iter()
            .zip(&owned)
            .map(|(v, c)| match c {
                Some(c) => c.as_slice(),
                None => &bufs[v.buf][v.first()..v.first() + v.len],
            })
            .collect();
        let mut scratch;
        let o: &mut [f32] = if out.dtype == DType::F32 {
            &mut out_buf[out.first()..out.first() + out.len]
        } else {
            scratch = vec![0f32; out.len];
            &mut scratch
        };
        let r = compute(k, &slices, o, u);
        if out.dtype != DType::F32 {
            let vals = o.to_vec();
            narrow(&mut out_buf, &out, &vals, moves);
        }
        r
    };
    *bufs[out.buf] = out_buf;
    result
}

/// One non-update kernel on f32 operands.
fn compute(k: &Kernel, x: &[&[f32]], o: &mut [f32], u: &StepUniforms) -> Result<()> {
    match k {
        Kernel::Op {
            op,
            in_shapes,
            out_shape,
            node,
            ..
        } => kernels::op(op, x, in_shapes, o, out_shape, u)
            .map_err(|e| Error::Backend(format!("node #{} ({}): {e}", node.index(), op.name()))),
        Kernel::Copy { .. } => {
            o.copy_from_slice(x[0]);
            Ok(())
        }
        Kernel::CopyIfFinite { .. } => {
            if x[1][1] == 0.0 {
                o.copy_from_slice(x[0]);
            }
            Ok(())
        }
        Kernel::GradStats { src, .. } => {
            let (grads, checked) = x.split_at(src.len());
            let s: f64 = grads.iter().map(|g| kernels::sum_squares(g)).sum();
            let bad = grads
                .iter()
                .chain(checked)
                .flat_map(|s| s.iter())
                .filter(|v| !v.is_finite())
                .count();
            o[0] = s as f32;
            o[1] = bad as f32;
            Ok(())
        }
        Kernel::AddInto { .. } => {
            for ((o, &a), &b) in o.iter_mut().zip(x[0]).zip(x[1]) {
                *o = b + a;
            }
            Ok(())
        }
        Kernel::Fill { value, .. } => {
            o.fill(*value);
            Ok(())
        }
        Kernel::Update(_) | Kernel::Fused(_) => unreachable!("run_kernel handles these"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(buf: usize, offset: usize, len: usize) -> View {
        View {
            buf,
            offset,
            len,
            dtype: DType::F32,
        }
    }

    /// The liveness walk that lets a backward pair keep its columns in scratch: dead only when
    /// a write covering the whole view comes before any read of a byte of it, walking on past
    /// the end of the list to the pair again.
    #[test]
    fn columns_are_dead_only_when_overwritten_before_any_read() {
        let cols = view(3, 64, 100);
        let fill = |v: View| Kernel::Fill { dst: v, value: 0.0 };
        let copy = |src: View, dst: View| Kernel::Copy { src, dst };
        let pair = || fill(cols); // stands for the pair's second kernel
                                  // Overwritten whole, then read: dead.
        let k = vec![
            pair(),
            copy(view(1, 0, 4), view(2, 0, 4)),
            fill(view(3, 0, 200)),
            copy(cols, view(2, 0, 100)),
        ];
        assert!(dead_after(&k, 0, &cols));
        // Read (one byte's element) first: live.
        let k = vec![pair(), copy(view(3, 456, 1), view(2, 0, 1)), fill(view(3, 0, 200))];
        assert!(!dead_after(&k, 0, &cols));
        // Overwritten in part, then read: live.
        let k = vec![
            pair(),
            fill(view(3, 64, 50)),
            copy(cols, view(2, 0, 100)),
            fill(view(3, 0, 200)),
        ];
        assert!(!dead_after(&k, 0, &cols));
        // Neither: the walk comes round to the pair, and the values would reach the next run.
        let k = vec![copy(view(1, 0, 4), view(2, 0, 4)), pair()];
        assert!(!dead_after(&k, 1, &cols));
        // Read at the start of the next run (a carried value): live.
        let k = vec![copy(cols, view(2, 0, 100)), pair(), fill(view(1, 0, 4))];
        assert!(!dead_after(&k, 1, &cols));
        // An update over its buffer counts as a read of all of it.
        let update = Kernel::Update(crate::backend::UpdateKernel {
            rule: crate::optim::OptimizerKind::Sgd,
            weight_decay: 0.0,
            clip_value: None,
            max_norm: None,
            stats: view(5, 0, 2),
            params: 0,
            grads: 3,
            state: vec![],
            segments: vec![],
        });
        let k = vec![pair(), update, fill(view(3, 0, 200))];
        assert!(!dead_after(&k, 0, &cols));
    }
}
