//! Dense autoencoders: an encoder of fully connected layers down to a code, and a decoder that
//! mirrors it back up, its weights either its own or **tied** to the encoder's — each decoder
//! layer multiplies by the transpose of the matching encoder matrix — which halves the weights
//! to learn. A denoising autoencoder is the same model trained to rebuild clean inputs from
//! corrupted ones ([`Graph::masking_noise`] on the device).

use super::Linear;
use crate::error::{invalid, Result};
use crate::graph::{Graph, NodeId, UnaryOp};
use crate::init::Init;

/// One decoder layer: `h @ Wᵀ + b` with the encoder's `W` (tied), or `h @ V + b` with its own.
#[derive(Clone, Copy, Debug)]
struct DecoderLayer {
    /// Its own weight `(in, out)` when untied.
    w: Option<NodeId>,
    /// Its bias `(out)`: a decoder layer always has its own.
    b: NodeId,
}

/// A dense autoencoder over `sizes = [input, hidden…, code]`: encoder layers
/// `{name}.enc{i}` (`sizes[i] → sizes[i+1]`, a [`Linear`]) each followed by the activation, and
/// decoder layers `{name}.dec{j}` back from the code to the input, the activation after every
/// one but the last, which gives the reconstruction's logits (use a sigmoid, and a binary
/// cross-entropy, for inputs in `[0, 1]` such as pixel intensities).
#[derive(Clone, Debug)]
pub struct DenseAutoencoder {
    encoder: Vec<Linear>,
    decoder: Vec<DecoderLayer>,
    activation: UnaryOp,
    tied: bool,
}

impl DenseAutoencoder {
    /// A new autoencoder with sigmoid activations, its decoder tied to the encoder or not.
    /// Parameters are found by name, so building it again on the same graph shares them.
    pub fn new(g: &mut Graph, name: &str, sizes: &[usize], tied: bool) -> Result<Self> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return invalid(
                "DenseAutoencoder",
                format!("sizes must list the input and at least one code size, all positive, got {sizes:?}"),
            );
        }
        let layers = sizes.len() - 1;
        let encoder = (0..layers)
            .map(|i| Linear::new(g, &format!("{name}.enc{i}"), sizes[i], sizes[i + 1]))
            .collect::<Result<Vec<_>>>()?;
        // Decoder layer j undoes encoder layer i = layers − 1 − j: sizes[i + 1] → sizes[i].
        let decoder = (0..layers)
            .map(|j| {
                let i = layers - 1 - j;
                let w = if tied {
                    None
                } else {
                    let shape = [sizes[i + 1], sizes[i]];
                    Some(g.param(&format!("{name}.dec{j}.w"), shape, Init::XavierUniform(1.0))?)
                };
                let b = g.param(&format!("{name}.dec{j}.b"), [sizes[i]], Init::Zeros)?;
                Ok(DecoderLayer { w, b })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DenseAutoencoder {
            encoder,
            decoder,
            activation: UnaryOp::Sigmoid,
            tied,
        })
    }

    /// The same model with another activation (`UnaryOp::Relu`, `UnaryOp::Tanh`, ...).
    pub fn with_activation(mut self, activation: UnaryOp) -> Self {
        self.activation = activation;
        self
    }

    /// Whether the decoder uses the encoder's transposed weights.
    pub fn is_tied(&self) -> bool {
        self.tied
    }

    /// Every parameter node: encoder weights and biases, then the decoder's.
    pub fn params(&self) -> Vec<NodeId> {
        let enc = self.encoder.iter().flat_map(|l| std::iter::once(l.w).chain(l.b));
        let dec = self
            .decoder
            .iter()
            .flat_map(|l| l.w.into_iter().chain(std::iter::once(l.b)));
        enc.chain(dec).collect()
    }

    /// Elements in the weight matrices alone (the encoder's, plus the decoder's when untied):
    /// tying halves this exactly.
    pub fn weight_count(&self, g: &Graph) -> usize {
        let enc: usize = self.encoder.iter().map(|l| g.shape(l.w).numel()).sum();
        let dec: usize = self
            .decoder
            .iter()
            .filter_map(|l| l.w)
            .map(|w| g.shape(w).numel())
            .sum();
        enc + dec
    }

    /// Elements in every parameter, biases included.
    pub fn parameter_count(&self, g: &Graph) -> usize {
        self.params().iter().map(|&p| g.shape(p).numel()).sum()
    }

    /// `x: (N, input) → code (N, code)`.
    pub fn encode(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let mut h = x;
        for l in &self.encoder {
            h = l.forward(g, h)?;
            h = g.unary(self.activation, h)?;
        }
        Ok(h)
    }

    /// `code (N, code) → reconstruction logits (N, input)`.
    pub fn decode(&self, g: &mut Graph, code: NodeId) -> Result<NodeId> {
        let mut h = code;
        let layers = self.decoder.len();
        for (j, l) in self.decoder.iter().enumerate() {
            h = match l.w {
                Some(w) => {
                    let w = g.cast_like(w, h)?;
                    g.matmul(h, w)?
                }
                None => {
                    // Tied: the encoder's (in, out) matrix used as (out, in), no copy made.
                    let w = g.cast_like(self.encoder[layers - 1 - j].w, h)?;
                    g.matmul_t(h, w, false, true)?
                }
            };
            let b = g.cast_like(l.b, h)?;
            h = g.add(h, b)?;
            if j + 1 < layers {
                h = g.unary(self.activation, h)?;
            }
        }
        Ok(h)
    }

    /// `(code, reconstruction logits)` of `x`.
    pub fn forward(&self, g: &mut Graph, x: NodeId) -> Result<(NodeId, NodeId)> {
        let code = self.encode(g, x)?;
        let logits = self.decode(g, code)?;
        Ok((code, logits))
    }

    /// The training objective for inputs in `[0, 1]`: the binary cross-entropy between the
    /// reconstruction of `x` — of `x` with a fraction `masking` of its elements zeroed, for a
    /// denoising autoencoder — and the clean `x`. Returns `(reconstruction logits, loss)`.
    pub fn loss(&self, g: &mut Graph, x: NodeId, masking: Option<f32>) -> Result<(NodeId, NodeId)> {
        let input = match masking {
            Some(p) => g.masking_noise(x, p)?,
            None => x,
        };
        let (_, logits) = self.forward(g, input)?;
        let loss = crate::loss::bce_with_logits(g, logits, x)?;
        Ok((logits, loss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tying_halves_the_weights_and_shares_the_encoder_matrices() {
        let sizes = [784, 256, 64];
        let mut g = Graph::new();
        let untied = DenseAutoencoder::new(&mut g, "u", &sizes, false).unwrap();
        let tied = DenseAutoencoder::new(&mut g, "t", &sizes, true).unwrap();
        let weights = 784 * 256 + 256 * 64;
        assert_eq!(untied.weight_count(&g), 2 * weights);
        assert_eq!(tied.weight_count(&g), weights);
        let biases = 256 + 64 + 256 + 784;
        assert_eq!(untied.parameter_count(&g), 2 * weights + biases);
        assert_eq!(tied.parameter_count(&g), weights + biases);
        // The graph holds exactly the parameters the two models report.
        let all: usize = g.params().iter().map(|p| p.shape.numel()).sum();
        assert_eq!(all, untied.parameter_count(&g) + tied.parameter_count(&g));
        // A reconstruction has the input's shape.
        let x = g.input("x", [5, 784]).unwrap();
        let (code, logits) = tied.forward(&mut g, x).unwrap();
        assert_eq!(
            (g.shape(code).dims(), g.shape(logits).dims()),
            (&[5, 64][..], &[5, 784][..])
        );
        assert!(DenseAutoencoder::new(&mut g, "bad", &[784], true).is_err());
        assert!(DenseAutoencoder::new(&mut g, "bad", &[784, 0], true).is_err());
    }
}
