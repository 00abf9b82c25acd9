//! What the examples share: clap value parsers that turn a bad flag into an error naming it
//! (instead of a NaN or a negative learning rate reaching the run), and a JSON string escape
//! for the final JSON line. Included by each example with `mod common;`; not an example itself.

#![allow(dead_code)] // each example uses some of these

/// An f32 that is finite and satisfies `ok`, else "`s` is not `what`".
pub fn parse_f32(s: &str, ok: impl Fn(f32) -> bool, what: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        _ => Err(format!("`{s}` is not {what}")),
    }
}

/// A finite number above 0 (learning rates, temperatures).
pub fn positive(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| v > 0.0, "a positive number")
}

/// A finite number ≥ 0 (weight decay, clipping, noise).
pub fn non_negative(s: &str) -> Result<f32, String> {
    parse_f32(s, |v| v >= 0.0, "a number ≥ 0")
}

/// Any finite number.
pub fn finite(s: &str) -> Result<f32, String> {
    parse_f32(s, |_| true, "a finite number")
}

/// `s` as the inside of a JSON string.
pub fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}
