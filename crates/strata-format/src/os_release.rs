//! os-release(5) files: reading a field, and the initrd's `/etc/initrd-release` made from a
//! distribution's os-release.

use std::collections::BTreeMap;

/// The value of `key` in os-release text, unquoted (single or double quotes; backslash
/// escapes inside double quotes). The first assignment wins.
pub fn field(text: &str, key: &str) -> Option<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))?
        .trim();
    if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return Some(v.to_owned());
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Some(value.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    Some(out)
}

/// `/etc/initrd-release` from the layer's os-release: the same fields, marked as an initrd
/// variant. systemd takes the presence of this file to mean "running in the initrd".
pub fn initrd_release(os_release: &str) -> String {
    let mut fields: BTreeMap<usize, String> = BTreeMap::new();
    let mut out = String::new();
    for (i, line) in os_release.lines().enumerate() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key {
            Some("VARIANT_ID") | Some("VARIANT") => continue,
            Some("PRETTY_NAME") => {
                let v = line.split_once('=').map(|(_, v)| v.trim_matches('"')).unwrap_or("");
                fields.insert(i, format!("PRETTY_NAME=\"{v} (initrd)\""));
            }
            _ => {
                fields.insert(i, line.to_string());
            }
        }
    }
    for line in fields.values() {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("VARIANT=\"initrd (strata)\"\nVARIANT_ID=initrd\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unquoted_the_same_way_everywhere() {
        let text = "ID=debian\nVERSION_ID=\"13\"\nNAME='Debian GNU/Linux'\nX=\"a \\\"b\\\" c\"\nVERSION_ID_LIKE=1\n";
        assert_eq!(field(text, "ID").as_deref(), Some("debian"));
        assert_eq!(field(text, "VERSION_ID").as_deref(), Some("13"));
        assert_eq!(field(text, "NAME").as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(field(text, "X").as_deref(), Some("a \"b\" c"));
        assert_eq!(field(text, "VERSION"), None, "a key is matched whole, not as a prefix");
    }

    #[test]
    fn initrd_release_marks_the_variant() {
        let r = initrd_release("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID=\"13\"\n");
        assert!(r.contains("ID=debian\n") && r.contains("VERSION_ID=\"13\"\n"));
        assert!(r.contains("VARIANT_ID=initrd\n"));
        assert!(r.contains("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie) (initrd)\""));
        assert_eq!(field(&r, "VERSION_ID").as_deref(), Some("13"));
    }
}
