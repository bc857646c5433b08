//! A small dotenv parser for the environment file the setup command writes
//! (`OZ_ENVIRONMENT_FILE`), read after setup.
//!
//! Accepted: blank lines, `#` comments, an optional `export ` prefix, `KEY=VALUE` with the
//! value unquoted (trimmed, ` #` starts a comment), `'single quoted'` (literal) or
//! `"double quoted"` (`\n`, `\r`, `\t`, `\"`, `\\`, `\$` escapes); quoted values may span
//! lines. `$VAR` references are not expanded. Errors name the line, never a value.

/// Why the environment file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DotenvError {
    /// A line is neither blank, a comment, nor `KEY=VALUE`.
    #[error("line {0}: expected KEY=VALUE")]
    MissingEquals(usize),
    /// The key is empty or holds characters other than letters, digits, `_` and `.`.
    #[error("line {0}: invalid variable name")]
    InvalidKey(usize),
    /// A quoted value never ends.
    #[error("line {0}: unterminated quoted value")]
    Unterminated(usize),
    /// Text follows a closing quote.
    #[error("line {0}: unexpected text after the closing quote")]
    TrailingText(usize),
}

/// Parses `text` into ordered pairs (duplicates kept; the caller merges last-wins).
///
/// # Errors
/// The first [`DotenvError`] found; the file is then ignored as a whole.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .map_or(trimmed, str::trim_start);
        let (key, rest) = body
            .split_once('=')
            .ok_or(DotenvError::MissingEquals(number))?;
        let key = key.trim();
        if !is_valid_key(key) {
            return Err(DotenvError::InvalidKey(number));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let mut raw = rest[1..].to_owned();
                let end = loop {
                    if let Some(end) = closing_quote(&raw, quote) {
                        break end;
                    }
                    let (_, next) = lines.next().ok_or(DotenvError::Unterminated(number))?;
                    raw.push('\n');
                    raw.push_str(next);
                };
                let after = raw[end + 1..].trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(DotenvError::TrailingText(number));
                }
                let inner = &raw[..end];
                if quote == '"' {
                    unescape(inner)
                } else {
                    inner.to_owned()
                }
            }
            _ => strip_inline_comment(rest).trim_end().to_owned(),
        };
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The byte index of the unescaped closing `quote` in `raw`, if any.
fn closing_quote(raw: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        if quote == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == quote && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other @ ('"' | '\\' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn strip_inline_comment(value: &str) -> &str {
    match value.find(" #").or_else(|| value.find("\t#")) {
        Some(i) => &value[..i],
        None if value.starts_with('#') => "",
        None => value,
    }
}
