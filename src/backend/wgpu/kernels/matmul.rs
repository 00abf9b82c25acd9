//! matmul.wgsl's parameter struct and lowering: batched `C = op(A) · op(B)`, transposes
//! expressed as strides; a tiled kernel for large products and a register-blocked one for
//! skinny ones.

use super::{u, Dispatch, Family, Grid};
use crate::backend::View;
use crate::shape::Shape;
use bytemuck::{Pod, Zeroable};

/// `matmul` and `matmul_small`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Matmul {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// The contracted dimension.
    pub k: u32,
    /// Offset of A.
    pub a_off: u32,
    /// Offset of B.
    pub b_off: u32,
    /// Offset of C.
    pub c_off: u32,
    /// Row stride of op(A).
    pub rsa: u32,
    /// Column stride of op(A).
    pub csa: u32,
    /// Row stride of op(B).
    pub rsb: u32,
    /// Column stride of op(B).
    pub csb: u32,
    /// Elements between batches of A (0: shared).
    pub a_batch: u32,
    /// Elements between batches of B (0: shared).
    pub b_batch: u32,
    /// Batches.
    pub batch: u32,
    /// 1: stage A through the vec4 view (`matmul` only).
    pub vec_a: u32,
    /// 1: stage B through the vec4 view (`matmul` only).
    pub vec_b: u32,
}

/// `out = op(a) · op(b)` for operand shapes `sa`, `sb` and output shape `os`.
#[allow(clippy::too_many_arguments)] // the two operands, their transposes and shapes, the output
pub fn matmul(
    ta: bool,
    tb: bool,
    a: View,
    b: View,
    sa: &Shape,
    sb: &Shape,
    out: View,
    os: &Shape,
) -> Result<Dispatch, String> {
    let (ra, rb, rc) = (sa.rank(), sb.rank(), os.rank());
    let (m, nn) = (os.dims()[rc - 2], os.dims()[rc - 1]);
    let kk = if ta { sa.dims()[ra - 2] } else { sa.dims()[ra - 1] };
    let batch: usize = os.dims()[..rc - 2].iter().product();
    let (rsa, csa) = if ta { (1, m) } else { (kk, 1) };
    let (rsb, csb) = if tb { (1, kk) } else { (nn, 1) };
    let ab = if ra == 2 { 0 } else { m * kk };
    let bb = if rb == 2 { 0 } else { kk * nn };
    let mut p = Matmul {
        m: u(m),
        n: u(nn),
        k: u(kk),
        a_off: u(a.offset),
        b_off: u(b.offset),
        c_off: u(out.offset),
        rsa: u(rsa),
        csa: u(csa),
        rsb: u(rsb),
        csb: u(csb),
        a_batch: u(ab),
        b_batch: u(bb),
        batch: u(batch),
        vec_a: 0,
        vec_b: 0,
    };
    let io = (vec![a.buf, b.buf], vec![out.buf]);
    if m < 64 || nn < 64 || kk < 32 {
        // Skinny products waste most of a 64×64 tile, and a short K never repays staging
        // tiles through workgroup memory: one invocation per 4×4 block of C instead.
        let grid = Grid::Elements(batch * m.div_ceil(4) * nn.div_ceil(4));
        return Ok(Dispatch::new(Family::Matmul, "matmul_small", &p, io.0, io.1, grid));
    }
    // vec4 staging needs the contiguous dimension, offsets and batch strides 4-aligned.
    p.vec_a = (!ta && kk.is_multiple_of(4) && a.offset.is_multiple_of(4) && ab.is_multiple_of(4)) as u32;
    p.vec_b = (!tb && nn.is_multiple_of(4) && b.offset.is_multiple_of(4) && bb.is_multiple_of(4)) as u32;
    let grid = [nn.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32];
    if grid.iter().any(|&g| g > 65535) {
        return Err(format!(
            "matmul of {batch}×{m}×{nn} needs more than 65535 workgroups in one dimension"
        ));
    }
    Ok(Dispatch::new(
        Family::Matmul,
        "matmul",
        &p,
        io.0,
        io.1,
        Grid::Fixed(grid),
    ))
}
