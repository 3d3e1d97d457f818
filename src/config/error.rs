//! Configuration errors: file, line, column and the key at fault.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration error: file, line, column, key and message.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

pub(super) type ErrAt<'a> = dyn Fn(Option<Range<usize>>, Option<&str>, String) -> ConfigError + 'a;

/// An error maker for `file`: a span in `text` becomes line and column.
pub(super) fn err_fn<'a>(
    file: &'a Path,
    text: &'a str,
) -> impl Fn(Option<Range<usize>>, Option<&str>, String) -> ConfigError + 'a {
    move |span, key, message| {
        let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            key: key.map(str::to_string),
            message,
        }
    }
}

/// A TOML or schema error, naming the key at fault: the dotted path of a value of the wrong
/// type, the full path of an unknown or missing field, the key written twice.
pub(super) fn toml_error(e: toml::de::Error, text: &str, err_at: &ErrAt) -> ConfigError {
    let message = e.message().trim_end().to_string();
    // toml keeps the path of the value at fault private, but shows it as "in `a.b`" when the
    // error is displayed without its input.
    let path = {
        let mut bare = e.clone();
        bare.set_input(None);
        bare.to_string().lines().find_map(|l| {
            l.strip_prefix("in `")
                .and_then(|l| l.strip_suffix('`'))
                .map(str::to_string)
        })
    };
    let join = |field: &str| match &path {
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    };
    let (key, message) = if let Some(field) = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
    {
        (Some(join(field)), message)
    } else if message.starts_with("duplicate key") {
        let written = e
            .span()
            .and_then(|s| text.get(s))
            .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
            .filter(|k| !k.is_empty());
        let what = match &written {
            Some(k) => format!("`{k}` is set twice in the same table; keep one of them"),
            None => "a key is set twice in the same table; keep one of them".to_string(),
        };
        (written, format!("duplicate key: {what}"))
    } else {
        (path, message)
    };
    err_at(e.span(), key.as_deref(), message)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
