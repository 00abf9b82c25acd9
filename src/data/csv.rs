//! Numeric tables in CSV: `target,feature1,feature2,…`, one sample per line, for classification
//! (integer class labels → [`Dataset`]) and regression (f32 targets).
//!
//! The format, exactly:
//! - fields are separated by commas and trimmed of surrounding spaces and tabs; lines end in
//!   `\n` or `\r\n`; a UTF-8 byte-order mark at the start is skipped; blank lines are skipped;
//! - the first column is the target, every other column a feature; every row has as many
//!   columns as the first, and at least two;
//! - every data field is a finite number in Rust's float syntax (`3`, `-0.5`, `1e-3`); NaN,
//!   ±inf, values beyond f32's range and empty fields are errors (impute missing values before
//!   loading, so the choice is visible);
//! - an optional header row of column names. [`CsvHeader::Auto`] (the default) takes the first
//!   row as a header when *none* of its fields is a number, as data when *all* are, and refuses
//!   a row that mixes the two (a header of numeric names, such as pandas' `0,1,2`, needs
//!   [`CsvHeader::Present`]); no quoting, so names cannot contain commas.
//!
//! Every error names the file, the line (1-based, counting blank lines and the header) and the
//! column (1-based, with its name when there is a header). Parsing is by hand: the format is a
//! few rules over numbers, and owning the loop is what lets each error say where it is.

use super::Dataset;
use crate::error::{Error, Result};
use std::path::Path;

/// Whether a CSV file starts with a row of column names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CsvHeader {
    /// A header when no field of the first row is a number; data when every field is.
    #[default]
    Auto,
    /// The first row is a header, whatever it holds.
    Present,
    /// Every row is data.
    Absent,
}

/// A numeric table read from CSV: `targets[i]` and the `columns` features of row `i`
/// (`features[i·columns..(i+1)·columns]`).
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    /// Where it came from (used in error messages).
    pub source: String,
    /// The header's names, target column first, if the file has a header.
    pub names: Option<Vec<String>>,
    /// The first column of each row.
    pub targets: Vec<f32>,
    /// The other columns, row-major `(rows, columns)`.
    pub features: Vec<f32>,
    /// Features per row.
    pub columns: usize,
    /// The 1-based line of each row in the file.
    pub lines: Vec<usize>,
}

/// Read a CSV table from a file; see the module documentation for the format.
pub fn read_csv(path: &Path, header: CsvHeader) -> Result<CsvTable> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    parse_csv(&bytes, &path.display().to_string(), header)
}

/// Read a CSV file as a classification dataset: integer labels in the first column, classes
/// `0..=max label` (see [`CsvTable::classification`]).
pub fn load_csv_classification(path: &Path, header: CsvHeader) -> Result<Dataset> {
    read_csv(path, header)?.classification(None)
}

fn at(source: &str, line: usize, col: usize, names: Option<&[String]>, what: String) -> Error {
    let name = names
        .and_then(|n| n.get(col - 1))
        .map_or(String::new(), |n| format!(" (`{n}`)"));
    Error::Io(format!("{source}: line {line}, column {col}{name}: {what}"))
}

/// A field as a finite f32, or what is wrong with it.
fn number(field: &str) -> std::result::Result<f32, String> {
    if field.is_empty() {
        return Err("empty field (missing value)".into());
    }
    match field.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) if field.contains(['n', 'N']) => Err(format!(
            "`{}` is not finite (NaN and ±inf are not allowed)",
            shorten(field)
        )),
        Ok(_) => Err(format!("`{}` is beyond f32's range (±3.4e38)", shorten(field))),
        Err(_) => Err(format!("`{}` is not a number", shorten(field))),
    }
}

/// At most 40 characters of a field, for messages.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        s.chars().take(40).collect::<String>() + "…"
    }
}

/// Parse CSV text; `source` names it in errors (a path, or a label for text that did not come
/// from a file).
pub fn parse_csv(bytes: &[u8], source: &str, header: CsvHeader) -> Result<CsvTable> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut t = CsvTable {
        source: source.to_string(),
        names: None,
        targets: Vec::new(),
        features: Vec::new(),
        columns: 0,
        lines: Vec::new(),
    };
    // Columns per row (target included), fixed by the first row, and the line that fixed it.
    let mut width: Option<(usize, usize)> = None;
    let mut fields: Vec<&str> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            Error::Io(format!(
                "{source}: line {line}: not UTF-8 text (invalid byte at column {} of the line)",
                e.valid_up_to() + 1
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(text.split(',').map(|f| f.trim_matches([' ', '\t'])));
        let names = t.names.as_deref();
        match width {
            None => {
                if fields.len() < 2 {
                    return Err(Error::Io(format!(
                        "{source}: line {line} has {} column; a row needs a target and at least one feature",
                        fields.len()
                    )));
                }
                width = Some((fields.len(), line));
                // Anything Rust reads as a float counts as numeric here, NaN and 1e39 included:
                // such a row is data, and the field's own error says what is wrong with it.
                let is_num = |f: &str| f.parse::<f64>().is_ok();
                let numeric = fields.iter().filter(|f| is_num(f)).count();
                let is_header = match header {
                    CsvHeader::Present => true,
                    CsvHeader::Absent => false,
                    CsvHeader::Auto if numeric == 0 => true,
                    CsvHeader::Auto if numeric == fields.len() => false,
                    CsvHeader::Auto => {
                        let col = fields.iter().position(|f| !is_num(f)).unwrap_or(0) + 1;
                        return Err(at(
                            source,
                            line,
                            col,
                            None,
                            format!(
                                "`{}` is not a number, but other fields of this first row are: it is neither a header (all names) nor a data row (all numbers)",
                                shorten(fields[col - 1])
                            ),
                        ));
                    }
                };
                if is_header {
                    t.names = Some(fields.iter().map(|f| f.to_string()).collect());
                    continue;
                }
            }
            Some((w, first)) if fields.len() != w => {
                return Err(Error::Io(format!(
                    "{source}: line {line} has {} columns but line {first} has {w}",
                    fields.len()
                )));
            }
            Some(_) => {}
        }
        for (c, f) in fields.iter().enumerate() {
            let v = number(f).map_err(|what| at(source, line, c + 1, names, what))?;
            if c == 0 {
                t.targets.push(v);
            } else {
                t.features.push(v);
            }
        }
        t.lines.push(line);
    }
    match width {
        None => Err(Error::Io(format!("{source}: no rows (the file is empty)"))),
        Some(_) if t.targets.is_empty() => Err(Error::Io(format!("{source}: a header but no data rows"))),
        Some((w, _)) => {
            t.columns = w - 1;
            Ok(t)
        }
    }
}

impl CsvTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no rows (never, for a table [`parse_csv`] returned).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The feature names (the header without the target's), if there is a header.
    pub fn feature_names(&self) -> Option<&[String]> {
        self.names.as_deref().map(|n| &n[1..])
    }

    /// The table as a classification dataset: samples of shape `[columns]`, the targets as
    /// class labels. Every target must be a non-negative integer (an error names the file, line
    /// and column of the first that is not) and, when `classes` is given, below it; otherwise
    /// the classes are `0..=max label`.
    pub fn classification(self, classes: Option<usize>) -> Result<Dataset> {
        let names = self.names.as_deref();
        let mut labels = Vec::with_capacity(self.len());
        for (&v, &line) in self.targets.iter().zip(&self.lines) {
            let err = |what: String| at(&self.source, line, 1, names, what);
            if v < 0.0 || v.fract() != 0.0 || v >= 4_294_967_296.0 {
                return Err(err(format!("label {v} is not a non-negative integer class")));
            }
            let l = v as u32;
            if let Some(c) = classes.filter(|&c| l as usize >= c) {
                return Err(err(format!("label {l} is not among the {c} classes 0..{c}")));
            }
            labels.push(l);
        }
        let classes = classes.unwrap_or_else(|| labels.iter().max().map_or(1, |&m| m as usize + 1));
        Dataset::new(self.features, labels, vec![self.columns], classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, header: CsvHeader) -> String {
        parse_csv(text.as_bytes(), "t.csv", header).unwrap_err().to_string()
    }

    #[test]
    fn reads_rows_with_or_without_a_header() {
        let t = parse_csv(
            b"\xef\xbb\xbfy, a ,b\r\n1,2,3\n\n0, -4.5 ,6e1\n",
            "t.csv",
            CsvHeader::Auto,
        )
        .unwrap();
        assert_eq!(t.names.as_deref().unwrap(), ["y", "a", "b"]);
        assert_eq!(t.feature_names().unwrap(), ["a", "b"]);
        assert_eq!((t.targets.as_slice(), t.columns), ([1.0, 0.0].as_slice(), 2));
        assert_eq!(t.features, [2.0, 3.0, -4.5, 60.0]);
        assert_eq!(t.lines, [2, 4]);
        let t = parse_csv(b"1.5,2\n-3,4", "t.csv", CsvHeader::Auto).unwrap();
        assert_eq!(
            (t.names, t.targets, t.features),
            (None, vec![1.5, -3.0], vec![2.0, 4.0])
        );
        // Numeric names need the header declared; with it, the first row is not data.
        let t = parse_csv(b"0,1\n5,6\n", "t.csv", CsvHeader::Present).unwrap();
        assert_eq!((t.len(), t.names.unwrap()), (1, vec!["0".to_string(), "1".into()]));
        assert!(parse_csv(b"y,x\n1,2\n", "t.csv", CsvHeader::Absent).is_err());
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let e = err("y,a,b\n1,2,3\n0,x7,3\n", CsvHeader::Auto);
        assert_eq!(e, "io: t.csv: line 3, column 2 (`a`): `x7` is not a number");
        let e = err("1,2,3\n1,2\n", CsvHeader::Auto);
        assert_eq!(e, "io: t.csv: line 2 has 2 columns but line 1 has 3");
        let e = err("y,a\n1,2\n0,2,3\n", CsvHeader::Auto);
        assert_eq!(e, "io: t.csv: line 3 has 3 columns but line 1 has 2");
        let e = err("1,2,3\n0,NaN,3\n", CsvHeader::Auto);
        assert_eq!(
            e,
            "io: t.csv: line 2, column 2: `NaN` is not finite (NaN and ±inf are not allowed)"
        );
        let e = err("1,2,3\n0,2,-inf\n", CsvHeader::Auto);
        assert!(e.contains("line 2, column 3: `-inf` is not finite"), "{e}");
        let e = err("1,2,1e39\n", CsvHeader::Auto);
        assert!(e.contains("line 1, column 3: `1e39` is beyond f32's range"), "{e}");
        let e = err("1,nan,3\n", CsvHeader::Auto);
        assert!(e.contains("line 1, column 2: `nan` is not finite"), "{e}");
        let e = err("1,2,3\n0,,3\n", CsvHeader::Auto);
        assert!(e.contains("line 2, column 2: empty field"), "{e}");
        assert_eq!(err("", CsvHeader::Auto), "io: t.csv: no rows (the file is empty)");
        assert_eq!(
            err("\n \r\n", CsvHeader::Auto),
            "io: t.csv: no rows (the file is empty)"
        );
        assert_eq!(err("y,a\n", CsvHeader::Auto), "io: t.csv: a header but no data rows");
        let e = err("569,30,malignant,benign\n1,2,3,4\n", CsvHeader::Auto);
        assert!(
            e.starts_with("io: t.csv: line 1, column 3: `malignant` is not a number, but other fields"),
            "{e}"
        );
        assert!(err("1\n2\n", CsvHeader::Auto).contains("line 1 has 1 column"));
        let e = parse_csv(b"1,2\n0,\xff\n", "t.csv", CsvHeader::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: not UTF-8"), "{e}");
    }

    #[test]
    fn classification_checks_labels() {
        let d = parse_csv(b"y,a\n1,0.5\n0,1\n2,3\n", "t.csv", CsvHeader::Auto)
            .unwrap()
            .classification(None)
            .unwrap();
        assert_eq!((d.labels.as_slice(), d.classes), ([1, 0, 2].as_slice(), 3));
        assert_eq!(
            (d.sample_shape.as_slice(), d.images.as_slice()),
            ([1].as_slice(), [0.5, 1.0, 3.0].as_slice())
        );
        let table = |t: &str| parse_csv(t.as_bytes(), "t.csv", CsvHeader::Auto).unwrap();
        let e = table("y,a\n1,2\n\n0.5,1\n")
            .classification(None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "io: t.csv: line 4, column 1 (`y`): label 0.5 is not a non-negative integer class"
        );
        let e = table("1,2\n-1,1\n").classification(None).unwrap_err().to_string();
        assert_eq!(
            e,
            "io: t.csv: line 2, column 1: label -1 is not a non-negative integer class"
        );
        let e = table("1,2\n2,1\n").classification(Some(2)).unwrap_err().to_string();
        assert_eq!(
            e,
            "io: t.csv: line 2, column 1: label 2 is not among the 2 classes 0..2"
        );
        assert_eq!(table("1,2\n").classification(Some(4)).unwrap().classes, 4);
    }

    #[test]
    fn files_that_cannot_be_read_name_their_path() {
        let e = read_csv(Path::new("/no/such/dir/x.csv"), CsvHeader::Auto)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("io: /no/such/dir/x.csv: "), "{e}");
    }
}
