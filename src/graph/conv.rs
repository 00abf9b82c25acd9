//! Builders for convolution, pooling and dropout on `(N, C, H, W)` tensors. Convolution is
//! im2col + one batched matmul (a GEMM is what every device does fastest); its gradient follows
//! from the matmul and im2col rules.

use super::{shape_err, Graph, NodeId, Op, Window};
use crate::error::{invalid, Result};
use crate::shape::Shape;

impl Graph {
    fn nchw(&self, op: &'static str, x: NodeId) -> Result<[usize; 4]> {
        self.check_ids(op, &[x])?;
        match *self.shape(x).dims() {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(shape_err(
                op,
                self.describe_new(&[x]),
                vec![self.shape(x)],
                "expected an (N, C, H, W) tensor",
            )),
        }
    }

    fn window_out(&self, op: &'static str, x: NodeId, win: &Window) -> Result<(usize, usize)> {
        let [_, _, h, w] = self.nchw(op, x)?;
        win.output(h, w).ok_or_else(|| {
            shape_err(
                op,
                self.describe_new(&[x]),
                vec![self.shape(x)],
                format!(
                    "a {}x{} window with stride {:?}, padding {:?} and dilation {:?} does not fit: output size (H + 2P − D(K−1) − 1)/S + 1 would be below 1",
                    win.k[0], win.k[1], win.stride, win.pad, win.dilation
                ),
            )
        })
    }

    /// Unfold windows: `(N, C, H, W)` → `(N, C·KH·KW, OH·OW)`.
    pub fn im2col(&mut self, x: NodeId, win: Window) -> Result<NodeId> {
        let [n, c, _, _] = self.nchw("im2col", x)?;
        let (oh, ow) = self.window_out("im2col", x, &win)?;
        self.push(
            Op::Im2Col(win),
            vec![x],
            Shape(vec![n, c * win.k[0] * win.k[1], oh * ow]),
        )
    }

    /// 2-D convolution (cross-correlation, as every framework computes it) of `x: (N, C, H, W)`
    /// with `w: (O, C, KH, KW)`, stride, zero padding and dilation → `(N, O, OH, OW)`.
    pub fn conv2d(
        &mut self,
        x: NodeId,
        w: NodeId,
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<NodeId> {
        self.conv2d_grouped(x, w, stride, pad, dilation, 1)
    }

    /// Grouped convolution: the `C` input and `O` output channels split into `groups` equal
    /// groups, output group `i` seeing only input group `i`; `w: (O, C/groups, KH, KW)`.
    /// `groups = C` with `O = C` is a depthwise convolution.
    ///
    /// Each group is one (O/G × C/G·KH·KW) @ (C/G·KH·KW × OH·OW) product in the same batched
    /// matmul; the weights are broadcast over the batch for it (a copy of N × the weights per
    /// step, summed back over the batch in the backward pass).
    pub fn conv2d_grouped(
        &mut self,
        x: NodeId,
        w: NodeId,
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<NodeId> {
        let [n, c, h, wd] = self.nchw("conv2d", x)?;
        self.check_ids("conv2d", &[w])?;
        let ws = self.shape(w).clone();
        let err = |g: &Self, why: String| shape_err("conv2d", g.describe_new(&[x, w]), vec![g.shape(x), &ws], why);
        let [o, wc, kh, kw] = match *ws.dims() {
            [o, wc, kh, kw] => [o, wc, kh, kw],
            _ => return Err(err(self, "expected weights (O, C/groups, KH, KW)".into())),
        };
        if groups == 0 || !c.is_multiple_of(groups) || !o.is_multiple_of(groups) {
            return Err(err(
                self,
                format!("{groups} groups must divide both the {c} input and the {o} output channels"),
            ));
        }
        if wc * groups != c {
            let why = if groups == 1 {
                format!("input has {c} channels but the weights expect {wc}")
            } else {
                format!(
                    "input has {c} channels, {} per group in {groups} groups, but the weights expect {wc}",
                    c / groups
                )
            };
            return Err(err(self, why));
        }
        let win = Window {
            k: [kh, kw],
            stride,
            pad,
            dilation,
        };
        let (oh, ow) = self.window_out("conv2d", x, &win)?;
        let ckk = wc * kh * kw; // per group
        let y = if groups == 1 {
            let w2 = self.reshape(w, [o, ckk])?;
            if [kh, kw] == [1, 1] && stride == [1, 1] && pad == [0, 0] {
                // A 1x1 convolution is a matmul over channels: no unfolding needed.
                let xr = self.reshape(x, [n, c, h * wd])?;
                self.matmul(w2, xr)?
            } else {
                let cols = self.im2col(x, win)?; // (N, C·KH·KW, OH·OW)
                self.matmul(w2, cols)? // (O, CKK) @ (N, CKK, L) → (N, O, L)
            }
        } else {
            // Rows of the unfolded input are channel-major, so each group's rows are contiguous.
            let cols = self.im2col(x, win)?;
            let cols = self.reshape(cols, [n, groups, ckk, oh * ow])?;
            let w3 = self.reshape(w, [1, groups, o / groups, ckk])?;
            let wb = self.broadcast_to(w3, [n, groups, o / groups, ckk])?;
            self.matmul(wb, cols)? // (N, G, O/G, L)
        };
        self.reshape(y, [n, o, oh, ow])
    }

    /// Max pooling over `k×k` windows: `(N, C, H, W)` → `(N, C, OH, OW)`. The argmax of each
    /// window is computed once and kept for the backward pass.
    pub fn max_pool2d(&mut self, x: NodeId, k: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> Result<NodeId> {
        let (win, out) = self.pool_window("max_pool2d", x, k, stride, pad)?;
        let idx = self.push(Op::MaxPoolArgmax(win), vec![x], out.clone())?;
        self.push(Op::GatherPlanes, vec![x, idx], out)
    }

    /// Average pooling (padding counted in the divisor): `(N, C, H, W)` → `(N, C, OH, OW)`.
    pub fn avg_pool2d(&mut self, x: NodeId, k: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> Result<NodeId> {
        let (win, out) = self.pool_window("avg_pool2d", x, k, stride, pad)?;
        self.push(Op::AvgPool(win), vec![x], out)
    }

    /// The window of a pooling op and its output shape `(N, C, OH, OW)`; padding beyond half
    /// the kernel (windows of padding alone) is an error.
    fn pool_window(
        &self,
        op: &'static str,
        x: NodeId,
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Result<(Window, Shape)> {
        let [n, c, _, _] = self.nchw(op, x)?;
        let win = Window {
            k,
            stride,
            pad,
            dilation: [1, 1],
        };
        if pad[0] * 2 > k[0] || pad[1] * 2 > k[1] {
            return invalid(op, format!("padding {pad:?} must be at most half the kernel {k:?}"));
        }
        let (oh, ow) = self.window_out(op, x, &win)?;
        Ok((win, Shape(vec![n, c, oh, ow])))
    }

    /// Global average pooling: `(N, C, H, W)` → `(N, C)`.
    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        self.nchw("global_avg_pool", x)?;
        self.mean(x, &[2, 3], false)
    }

    /// Inverted dropout: zero each element with probability `p` and scale the rest by
    /// `1/(1−p)`, with a fresh mask every step. Use only in training graphs; evaluation is the
    /// identity.
    pub fn dropout(&mut self, x: NodeId, p: f32) -> Result<NodeId> {
        self.check_ids("dropout", &[x])?;
        if !(0.0..1.0).contains(&p) {
            return invalid("dropout", format!("drop probability must be in [0, 1), got {p}"));
        }
        if p == 0.0 {
            return Ok(x);
        }
        let key = self.nodes().len() as u32;
        // The mask takes x's float type, so dropout works in f16 graphs too.
        let mask = self.push_typed(Op::DropoutMask { p, key }, vec![], self.shape(x).clone(), self.dtype(x));
        self.mul(x, mask)
    }
}
