//! Text for character-level language models: a fixed 96-symbol vocabulary (newline and printable
//! ASCII, with common typographic characters mapped onto it), and the batching of truncated
//! backpropagation through time — a corpus cut into `N` parallel lanes read window by window, so
//! each window of a lane continues the previous one and the model's state can be carried over.

/// Symbols of [`encode_ascii96`]: id 0 is `'\n'`, ids 1–95 are ASCII 32–126.
pub const ASCII96: usize = 96;

/// Map text to [`ASCII96`] ids: newline and printable ASCII as themselves; box-drawing lines to
/// `-`, `|` and `+`; curly quotes and the acute accent to straight quotes; dashes and the minus
/// sign to `-`; middle dots and bullets to `*`; no-break spaces and tabs to spaces; carriage
/// returns dropped; anything else to `?`. (`tools/torch_char_lm.py` applies the same map.)
pub fn encode_ascii96(text: &str) -> Vec<u32> {
    let mut ids = Vec::with_capacity(text.len());
    for ch in text.chars() {
        let c = match ch {
            '\r' => continue,
            '─' | '═' | '—' | '−' => '-',
            '│' => '|',
            '┼' | '├' | '┤' | '┬' | '┴' | '┌' | '┐' | '└' | '┘' => '+',
            '\u{a0}' | '\t' => ' ',
            '“' | '”' => '"',
            '‘' | '’' | '´' => '\'',
            '·' | '•' => '*',
            c => c,
        };
        ids.push(match c {
            '\n' => 0,
            ' '..='~' => c as u32 - 31,
            _ => '?' as u32 - 31,
        });
    }
    ids
}

/// The text of [`ASCII96`] ids (ids beyond the vocabulary show as `?`).
pub fn decode_ascii96(ids: &[u32]) -> String {
    ids.iter()
        .map(|&i| match i {
            0 => '\n',
            1..=95 => char::from_u32(i + 31).unwrap_or('?'),
            _ => '?',
        })
        .collect()
}

/// A token sequence cut into `lanes` equal, contiguous lanes (the remainder dropped), read in
/// windows of `window` steps: window `w` of every lane is its tokens `w·window .. (w+1)·window`,
/// with targets one step ahead. Time-major, as the recurrent layers take them.
#[derive(Clone, Debug)]
pub struct Lanes {
    tokens: Vec<u32>,
    lanes: usize,
    len: usize,
    window: usize,
}

impl Lanes {
    /// Cut `tokens` into `lanes` lanes read `window` steps at a time. Errors when a lane would
    /// not hold one window plus its one-step-ahead target.
    pub fn new(tokens: &[u32], lanes: usize, window: usize) -> crate::Result<Lanes> {
        let len = tokens.len().checked_div(lanes).unwrap_or(0);
        if lanes == 0 || window == 0 || len < window + 1 {
            return crate::error::invalid(
                "Lanes",
                format!(
                    "{} tokens do not make {lanes} lanes of at least {} (one window of {window} and its next token)",
                    tokens.len(),
                    window + 1
                ),
            );
        }
        Ok(Lanes {
            tokens: tokens[..lanes * len].to_vec(),
            lanes,
            len,
            window,
        })
    }

    /// Tokens per lane.
    pub fn lane_len(&self) -> usize {
        self.len
    }

    /// Whole windows in one pass over the lanes: `(lane_len − 1) / window`.
    pub fn windows(&self) -> usize {
        (self.len - 1) / self.window
    }

    /// Steps in window `w` (the last, partial one of [`Lanes::windows_with_rest`] may be shorter).
    pub fn steps_in(&self, w: usize) -> usize {
        let start = w * self.window;
        self.window.min(self.len - 1 - start)
    }

    /// Windows including a final partial one: `⌈(lane_len − 1) / window⌉`.
    pub fn windows_with_rest(&self) -> usize {
        (self.len - 1).div_ceil(self.window)
    }

    /// Inputs and targets of window `w`, each `(steps, lanes)` row-major (time-major).
    pub fn window(&self, w: usize) -> (Vec<u32>, Vec<u32>) {
        let start = w * self.window;
        let steps = self.steps_in(w);
        let mut x = Vec::with_capacity(steps * self.lanes);
        let mut y = Vec::with_capacity(steps * self.lanes);
        for t in 0..steps {
            for b in 0..self.lanes {
                let i = b * self.len + start + t;
                x.push(self.tokens[i]);
                y.push(self.tokens[i + 1]);
            }
        }
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii96_round_trips_ascii_and_maps_the_rest() {
        let ids = encode_ascii96("Hi ~\n─│┼“x”—é\r\t");
        assert_eq!(decode_ascii96(&ids), "Hi ~\n-|+\"x\"-? ");
        assert!(ids.iter().all(|&i| (i as usize) < ASCII96));
    }

    #[test]
    fn lanes_continue_window_after_window() {
        let t: Vec<u32> = (0..23).collect();
        let l = Lanes::new(&t, 2, 4).unwrap(); // lanes 0..11 and 11..22
        assert_eq!((l.lane_len(), l.windows(), l.windows_with_rest()), (11, 2, 3));
        let (x, y) = l.window(1);
        assert_eq!(x, vec![4, 15, 5, 16, 6, 17, 7, 18]);
        assert_eq!(y, vec![5, 16, 6, 17, 7, 18, 8, 19]);
        assert_eq!(l.steps_in(2), 2);
        assert_eq!(l.window(2).1, vec![9, 20, 10, 21]);
        assert!(Lanes::new(&t, 5, 4).is_err());
    }
}
