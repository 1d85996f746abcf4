//! Aligned text columns for the CLI's tables.

/// `rows` under `header` in aligned columns (two spaces apart), one line
/// each with a trailing newline; the last column is not padded, trailing
/// spaces are trimmed.
pub fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(N - 1) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < N {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_free() {
        let t = columns(
            &["A", "BB", "NOTE"],
            &[
                ["xxx".into(), "y".into(), "a long note".into()],
                ["z".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(t, "A    BB  NOTE\nxxx  y   a long note\nz\n");
    }
}
