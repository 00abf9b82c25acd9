//! Fuzzing the readers of untrusted files with proptest: valid files mutated at random (bytes
//! flipped, cut short, spliced) must give an error or a value, never a panic. Bounded: a fixed
//! number of cases each, a few seconds in all. Readers: IDX, checkpoints, CSV tables.

use kiln::checkpoint::{self, CheckpointInfo};
use kiln::data::{parse_csv, parse_idx, CsvHeader, CsvTable};
use kiln::{Cpu, Graph, Init, ParamStore};
use proptest::prelude::*;
use std::path::Path;

/// Edits applied to a valid file: (position, new byte) flips, a cut, and an inserted run.
fn mutate(base: &[u8], flips: &[(usize, u8)], cut: Option<usize>, insert: Option<(usize, Vec<u8>)>) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(i, v) in flips {
        if !b.is_empty() {
            let n = b.len();
            b[i % n] = v;
        }
    }
    if let Some((at, run)) = insert {
        let at = at % (b.len() + 1);
        b.splice(at..at, run);
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn idx_sample() -> Vec<u8> {
    // A (3, 4, 5) IDX array: magic 0x00000803, dims, 60 data bytes.
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    b.extend((0..60u8).map(|i| i * 3));
    b
}

fn checkpoint_sample() -> Vec<u8> {
    let mut g = Graph::new();
    g.param("w", [3, 4], Init::Uniform(-1.0, 1.0)).unwrap();
    g.param("b", [4], Init::Zeros).unwrap();
    let store = ParamStore::new(&Cpu, &g, 1).unwrap();
    let path = std::env::temp_dir().join(format!("kiln-fuzz-{}.safetensors", std::process::id()));
    let info = CheckpointInfo {
        model: "fuzz".into(),
        ..Default::default()
    };
    checkpoint::save(&path, &store, &info).unwrap();
    std::fs::read(&path).unwrap()
}

/// Byte flips, a cut, and an inserted run.
type Edits = (Vec<(usize, u8)>, Option<usize>, Option<(usize, Vec<u8>)>);

fn edits() -> impl Strategy<Value = Edits> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(any::<usize>()),
        prop::option::of((any::<usize>(), prop::collection::vec(any::<u8>(), 0..16))),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_idx_parser_never_panics((flips, cut, insert) in edits()) {
        let b = mutate(&idx_sample(), &flips, cut, insert);
        if let Ok(a) = parse_idx(&b) {
            // Whatever parses is self-consistent.
            prop_assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
        }
    }

    #[test]
    fn random_bytes_are_not_idx_files(b in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn the_checkpoint_reader_never_panics((flips, cut, insert) in edits()) {
        let b = mutate(&checkpoint_sample(), &flips, cut, insert);
        if let Ok((tensors, _)) = checkpoint::parse(&b, Path::new("fuzzed")) {
            for t in tensors.values() {
                prop_assert_eq!(t.shape.numel(), t.data.len());
            }
        }
    }
}

const CSV_SAMPLE: &str = "malignant,radius,texture,area\n1,17.99,10.38,1001\n0,13.54,14.36,566.3\r\n\n1,-2e-3,+7,.5\n";

/// Text built from the characters that matter to the CSV parser (digits, signs, exponents,
/// separators, line ends, the letters of nan/inf, a multi-byte character), so cases reach the
/// number and row checks rather than stopping at the first byte.
fn csv_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "0", "1", "2", "7", ".", "-", "+", "e", ",", ",", "\n", "\n", "\r", " ", "\t", "n", "a", "i", "f", "x",
            "é", "\u{feff}", "1e39", "3.5", "NaN", "inf",
        ]),
        0..80,
    )
    .prop_map(|parts| parts.concat())
}

/// Whatever parses is self-consistent, and turning it into a dataset is a value or an error.
fn check_table(t: CsvTable) -> Result<(), TestCaseError> {
    prop_assert!(t.columns >= 1 && !t.is_empty());
    prop_assert_eq!(t.features.len(), t.targets.len() * t.columns);
    prop_assert_eq!(t.lines.len(), t.targets.len());
    prop_assert!(t.features.iter().chain(&t.targets).all(|v| v.is_finite()));
    if let Some(n) = &t.names {
        prop_assert_eq!(n.len(), t.columns + 1);
    }
    if let Ok(d) = t.classification(None) {
        prop_assert!(d.labels.iter().all(|&l| (l as usize) < d.classes));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_csv_reader_never_panics((flips, cut, insert) in edits(), header in 0..3u8) {
        let b = mutate(CSV_SAMPLE.as_bytes(), &flips, cut, insert);
        let header = [CsvHeader::Auto, CsvHeader::Present, CsvHeader::Absent][header as usize];
        if let Ok(t) = parse_csv(&b, "fuzzed.csv", header) {
            check_table(t)?;
        }
    }

    #[test]
    fn csv_like_text_is_a_table_or_an_error(text in csv_like()) {
        if let Ok(t) = parse_csv(text.as_bytes(), "fuzzed.csv", CsvHeader::Auto) {
            check_table(t)?;
        }
    }

    #[test]
    fn random_bytes_are_a_table_or_an_error(b in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(t) = parse_csv(&b, "fuzzed.csv", CsvHeader::Auto) {
            check_table(t)?;
        }
    }
}
