//! `EnvironmentFile=` files (systemd.exec(5)): rendering and reading back.
//!
//! systemd reads these files with `load_env_file()` in `src/basic/env-file.c`
//! (<https://github.com/systemd/systemd/blob/main/src/basic/env-file.c>). Its
//! treatment of backslashes inside quotes changed across releases (v219 to
//! v243 drop the backslash of any escaped character inside double and single
//! quotes; later releases keep it except before `"`, `\`, `` ` `` and `$`, and
//! take single quotes literally). Unquoted values have always read `\c` as `c`, so
//! [`render_env_file`] writes every value unquoted and backslash-escapes each
//! character that is not plainly safe: every systemd release reads back
//! exactly the value given.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Renders an `EnvironmentFile=` (systemd.exec(5)): one `KEY=value` line per
/// variable, in the order given, ending with a newline.
///
/// Values are written unquoted, with a backslash before every ASCII character
/// outside `[A-Za-z0-9_./:,@+=%-]` (space, quotes, `\`, `$`, `#`, ...), which
/// systemd reads back as that character on every release. Non-ASCII UTF-8 is
/// written as is. systemd does no `$VAR` or `%` specifier expansion inside an
/// environment file; `$` is escaped anyway so the file also reads safely to a
/// human or a shell. An empty value renders as `KEY=` and reads back as empty.
///
/// # Errors
///
/// - [`Error::InvalidEnvKey`] if a name is not `[A-Za-z_][A-Za-z0-9_]*`;
/// - [`Error::InvalidEnvValue`] if a value holds a control character other than
///   tab (a newline cannot be expressed in an unquoted value, and systemd drops
///   variables whose value holds other control characters);
/// - [`Error::DuplicateEnvKey`] if a name appears twice.
pub fn render_env_file(vars: &[(&str, &str)]) -> Result<String> {
    let mut out = String::new();
    for (i, (key, value)) in vars.iter().enumerate() {
        if !is_valid_key(key) {
            return Err(Error::InvalidEnvKey {
                key: (*key).to_owned(),
            });
        }
        if vars[..i].iter().any(|(k, _)| k == key) {
            return Err(Error::DuplicateEnvKey {
                key: (*key).to_owned(),
            });
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::InvalidEnvValue {
                key: (*key).to_owned(),
                reason: "it contains a newline or another control character; \
                         pass such data in a file instead",
            });
        }
        out.push_str(key);
        out.push('=');
        for c in value.chars() {
            if c.is_ascii() && !is_plain(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Parses an `EnvironmentFile=` the way systemd's `load_env_file()` does
/// (current releases), for reading back what a unit will see.
///
/// Handles comments (`#` and `;` at the start of a line), blank lines, unquoted
/// values with backslash escapes and line continuations, `'single'` and
/// `"double"` quoted values, and trailing whitespace. Later assignments of a
/// name replace earlier ones. Lines without `=` and names outside
/// `[A-Za-z_][A-Za-z0-9_]*` are skipped, as systemd skips them when it builds
/// the unit's environment. Never fails: what systemd ignores, this ignores.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
        CommentEscape,
    }
    use State::*;

    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let is_nl = |c: char| matches!(c, '\n' | '\r');

    let mut vars = BTreeMap::new();
    let mut key = String::new();
    let mut value = String::new();
    // Byte length of `value` before trailing unescaped whitespace, if any.
    let mut value_ws: Option<usize> = None;
    let mut push = |key: &mut String, value: &mut String, value_ws: Option<usize>| {
        if let Some(n) = value_ws {
            value.truncate(n);
        }
        let k = key.trim_end_matches(is_ws);
        if is_valid_key(k) {
            vars.insert(k.to_owned(), std::mem::take(value));
        }
        key.clear();
        value.clear();
    };

    let mut state = PreKey;
    for c in text.chars() {
        match state {
            PreKey => {
                if c == '#' || c == ';' {
                    state = Comment;
                } else if !is_ws(c) {
                    state = Key;
                    key.push(c);
                }
            }
            Key => {
                if is_nl(c) {
                    state = PreKey;
                    key.clear();
                } else if c == '=' {
                    state = PreValue;
                    value_ws = None;
                } else {
                    key.push(c);
                }
            }
            PreValue => {
                if is_nl(c) {
                    state = PreKey;
                    push(&mut key, &mut value, None);
                } else if c == '\'' {
                    state = SingleQuote;
                } else if c == '"' {
                    state = DoubleQuote;
                } else if c == '\\' {
                    state = ValueEscape;
                } else if !is_ws(c) {
                    state = Value;
                    value.push(c);
                }
            }
            Value => {
                if is_nl(c) {
                    state = PreKey;
                    push(&mut key, &mut value, value_ws);
                } else if c == '\\' {
                    state = ValueEscape;
                    value_ws = None;
                } else {
                    if !is_ws(c) {
                        value_ws = None;
                    } else if value_ws.is_none() {
                        value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            ValueEscape => {
                state = Value;
                if !is_nl(c) {
                    value.push(c);
                }
            }
            SingleQuote => {
                if c == '\'' {
                    state = PreValue;
                } else {
                    value.push(c);
                }
            }
            DoubleQuote => {
                if c == '"' {
                    state = PreValue;
                } else if c == '\\' {
                    state = DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            DoubleQuoteEscape => {
                state = DoubleQuote;
                if matches!(c, '"' | '\\' | '`' | '$') {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
            }
            Comment => {
                if c == '\\' {
                    state = CommentEscape;
                } else if is_nl(c) {
                    state = PreKey;
                }
            }
            CommentEscape => {
                state = if is_nl(c) { PreKey } else { Comment };
            }
        }
    }
    match state {
        Value => push(&mut key, &mut value, value_ws),
        PreValue | ValueEscape | SingleQuote | DoubleQuote | DoubleQuoteEscape => {
            push(&mut key, &mut value, None)
        }
        PreKey | Key | Comment | CommentEscape => {}
    }
    vars
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// ASCII characters written without a backslash.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:,@+=%-".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn round_trip(vars: &[(&str, &str)]) {
        let text = render_env_file(vars).expect("renders");
        let parsed = parse_env_file(&text);
        let expected: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(parsed, expected, "rendered:\n{text}");
    }

    #[test]
    fn renders_in_order_with_escapes() {
        let text = render_env_file(&[
            ("ETCD_NAME", "node-1"),
            ("URLS", "http://10.0.0.1:2379,http://10.0.0.2:2379"),
            ("MSG", "it's a \"test\" $HOME 100% \\o/"),
            ("EMPTY", ""),
        ])
        .expect("renders");
        assert_eq!(
            text,
            "ETCD_NAME=node-1\n\
             URLS=http://10.0.0.1:2379,http://10.0.0.2:2379\n\
             MSG=it\\'s\\ a\\ \\\"test\\\"\\ \\$HOME\\ 100%\\ \\\\o/\n\
             EMPTY=\n"
        );
    }

    #[test]
    fn round_trips_awkward_values() {
        round_trip(&[
            ("SPACES", "  leading and trailing  "),
            ("TABS", "\ta\tb\t"),
            ("QUOTES", r#"'single' "double" `back`"#),
            ("BACKSLASHES", r"\ \\ \n \t \"),
            ("DOLLAR", "$HOME ${PATH} $$"),
            ("PERCENT", "%n %i %% 100%"),
            ("COMMENT", "# not a comment ; nor this"),
            ("EQUALS", "a=b=c"),
            ("UNICODE", "héllo wörld ✓"),
            ("EMPTY", ""),
            ("_x1", "x"),
        ]);
    }

    #[test]
    fn refuses_bad_keys_values_and_duplicates() {
        for key in ["", "1X", "A-B", "A B", "A=B", "Ä"] {
            assert!(
                matches!(
                    render_env_file(&[(key, "v")]),
                    Err(Error::InvalidEnvKey { .. })
                ),
                "{key:?}"
            );
        }
        for value in ["a\nb", "a\rb", "a\0b", "\x1b[0m"] {
            assert!(
                matches!(
                    render_env_file(&[("K", value)]),
                    Err(Error::InvalidEnvValue { .. })
                ),
                "{value:?}"
            );
        }
        assert!(matches!(
            render_env_file(&[("K", "1"), ("L", "2"), ("K", "3")]),
            Err(Error::DuplicateEnvKey { key }) if key == "K"
        ));
    }

    #[test]
    fn parses_what_systemd_parses() {
        let text = "# comment\n\
                    ; another\n\
                    \n\
                    PLAIN=value   \n\
                    SPACED =  two words  \n\
                    SQ='a \\ b'\n\
                    DQ=\"a \\\"q\\\" \\$x \\n \\\\\"\n\
                    CONT=one\\\n\
                    two\n\
                    CONCAT='a'\"b\"c\n\
                    NOEQ\n\
                    BAD-KEY=x\n\
                    PLAIN=override\n\
                    EMPTY=\n\
                    LAST=end";
        let parsed = parse_env_file(text);
        let expected: BTreeMap<String, String> = [
            ("PLAIN", "override"),
            ("SPACED", "two words"),
            ("SQ", "a \\ b"),
            ("DQ", "a \"q\" $x \\n \\"),
            ("CONT", "onetwo"),
            ("CONCAT", "abc"),
            ("EMPTY", ""),
            ("LAST", "end"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn parses_unterminated_last_line() {
        assert_eq!(parse_env_file("A=1\nB=\"open")["B"], "open");
        assert_eq!(parse_env_file("A=x  ")["A"], "x");
        assert!(parse_env_file("A").is_empty());
    }

    /// Checks the rendering against systemd's own parser, where systemd is
    /// installed: the user environment generator reads `environment.d` files
    /// with the same `parse_env_file_internal()` that `EnvironmentFile=` uses,
    /// then prints each variable shell-quoted. (It also expands `$VAR` and
    /// rejects empty values, which `EnvironmentFile=` does not, so those are
    /// left out here.)
    #[test]
    fn systemd_reads_back_rendered_values() {
        let generator = Path::new(
            "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
        );
        if !generator.exists() {
            eprintln!("skipped: {} not installed", generator.display());
            return;
        }
        let vars = [
            ("DH_SPACES", "  leading and trailing  "),
            ("DH_TABS", "\ta\tb\t"),
            ("DH_QUOTES", r#"it's "quoted" `x`"#),
            ("DH_BACKSLASHES", r"\ \\ \n \"),
            ("DH_PERCENT", "%n %i 100%"),
            ("DH_COMMENT", "# not ; a comment"),
            ("DH_EQUALS", "a=b=c"),
            ("DH_UNICODE", "héllo wörld ✓"),
            ("DH_URLS", "http://10.0.0.1:2379,http://10.0.0.2:2379"),
        ];
        let home = tempfile::tempdir().expect("tempdir");
        let conf_dir = home.path().join(".config/environment.d");
        std::fs::create_dir_all(&conf_dir).expect("mkdir");
        std::fs::write(
            conf_dir.join("50-deckhand-test.conf"),
            render_env_file(&vars).expect("renders"),
        )
        .expect("write");
        let out = std::process::Command::new(generator)
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .output()
            .expect("run generator");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let got: BTreeMap<&str, String> = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("DH_"))
            .map(|(k, v)| (k, shell_unquote(v)))
            .collect();
        let want: BTreeMap<&str, String> =
            vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        assert_eq!(
            got,
            want,
            "rendered and read back by {}",
            generator.display()
        );
    }

    /// Undoes systemd's `shell_maybe_quote()` as far as these values need.
    fn shell_unquote(v: &str) -> String {
        let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            return v.to_owned();
        };
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(
            vars in proptest::collection::btree_map(
                "[A-Za-z_][A-Za-z0-9_]{0,12}",
                // Any printable text, tabs included, newlines and other controls excluded.
                "[^\\p{Cc}]{0,40}|[ \t\\\\'\"$%#;=`]{0,12}",
                0..8,
            )
        ) {
            let pairs: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let text = render_env_file(&pairs).expect("renders");
            let parsed = parse_env_file(&text);
            prop_assert_eq!(parsed, vars);
        }
    }
}
