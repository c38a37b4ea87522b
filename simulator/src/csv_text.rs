//! CSV input as the `csv` crate reads it, with the file's own line numbers.
//!
//! The crate skips blank lines (and comments) but numbers a record from
//! where its skip began, so a row after a blank line would be blamed on the
//! line before it. Dropping those lines first, and mapping the crate's line
//! numbers back, keeps every message on the right line.

/// The lines of a CSV file worth parsing, and where each came from.
pub(crate) struct CsvText {
    /// The kept lines, joined by `\n`.
    pub(crate) text: String,
    /// `lines[i]` is the 1-based line in the file of kept line `i + 1`.
    lines: Vec<usize>,
}

impl CsvText {
    /// Drops a byte-order mark, blank lines and, with `comment`, lines whose
    /// first non-blank character is it.
    pub(crate) fn new(raw: &str, comment: Option<char>) -> Self {
        let raw = raw.trim_start_matches('\u{feff}');
        let mut text = String::with_capacity(raw.len());
        let mut lines = Vec::new();
        for (i, line) in raw.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let trimmed = line.trim();
            if trimmed.is_empty() || comment.is_some_and(|c| trimmed.starts_with(c)) {
                continue;
            }
            text.push_str(line);
            text.push('\n');
            lines.push(i + 1);
        }
        Self { text, lines }
    }

    /// The file's line number of the crate's (1-based) line `line`.
    pub(crate) fn file_line(&self, line: u64) -> usize {
        usize::try_from(line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|i| self.lines.get(i).copied())
            .unwrap_or(0)
    }

    /// The file's line number of a record.
    pub(crate) fn record_line(&self, record: &csv::StringRecord) -> usize {
        record.position().map_or(0, |p| self.file_line(p.line()))
    }

    /// The file's line number of a reading error.
    pub(crate) fn error_line(&self, e: &csv::Error) -> usize {
        e.position().map_or(0, |p| self.file_line(p.line()))
    }
}

#[cfg(test)]
mod tests {
    use super::CsvText;

    #[test]
    fn rows_after_blank_lines_and_comments_keep_their_file_lines() {
        let t = CsvText::new("\u{feff}a,b\r\n\n1,2\n# note\n\n3,x\n", Some('#'));
        let mut reader = csv::Reader::from_reader(t.text.as_bytes());
        let lines: Vec<usize> = reader
            .records()
            .map(|r| t.record_line(&r.unwrap()))
            .collect();
        assert_eq!(lines, vec![3, 6]);
        assert_eq!(reader.headers().unwrap().get(0), Some("a"));
    }
}
