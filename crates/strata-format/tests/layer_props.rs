//! Property tests for `Layer::remove_where` and `Layer::diff_from` on small random trees.
//!
//! Names come from a tiny alphabet with `-` and `.` (both sort before `/`), so siblings like
//! `a`, `a-a`, `a.` and the contents of `a/` interleave in the byte-sorted entry list.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use proptest::prelude::*;
use strata_format::layer::{Entry, EntryKind, Layer, WHITEOUT_PREFIX};

/// An OCI opaque whiteout: hides every lower-layer child of its directory.
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// Entries of a random tree in generation order: every parent is a directory generated before
/// its children.
fn arb_universe() -> impl Strategy<Value = Vec<Entry>> {
    let name = "[ab][-.a]{0,2}";
    let entry = (any::<usize>(), name, 0u8..4, any::<u8>(), 0u64..3);
    proptest::collection::vec(entry, 1..28).prop_map(|raw| {
        let mut dirs: Vec<String> = vec![String::new()];
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for (parent, name, kind, byte, mtime) in raw {
            let parent = &dirs[parent % dirs.len()];
            let path = if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            };
            if !seen.insert(path.clone()) {
                continue;
            }
            let e = match kind {
                0 | 1 => {
                    dirs.push(path.clone());
                    Entry::dir(&path, 0o755, mtime)
                }
                2 => Entry::file(&path, vec![byte; usize::from(byte % 3)], 0o644, mtime),
                _ => Entry::symlink(&path, &format!("../t{}", byte % 3), mtime),
            };
            out.push(e);
        }
        out
    })
}

/// The layer of the `universe` entries that `pick` keeps (after `edit`), dropping entries whose
/// parent is not a directory of this layer.
fn build(universe: &[Entry], mut pick: impl FnMut(usize, &Entry) -> Option<Entry>) -> Layer {
    let mut dirs: HashSet<String> = HashSet::new();
    let mut entries = Vec::new();
    for (i, u) in universe.iter().enumerate() {
        if u.path
            .rsplit_once('/')
            .is_some_and(|(parent, _)| !dirs.contains(parent))
        {
            continue;
        }
        let Some(e) = pick(i, u) else { continue };
        if e.kind == EntryKind::Dir {
            dirs.insert(e.path.clone());
        }
        entries.push(e);
    }
    let n = entries.len();
    let layer = Layer::from_entries(entries).unwrap();
    assert_eq!(layer.entries().len(), n, "the generator adds every parent itself");
    layer
}

/// A parent layer and a child derived from it: entries dropped, kept, changed (metadata,
/// content, type) or added.
fn arb_parent_child() -> impl Strategy<Value = (Layer, Layer)> {
    (arb_universe(), proptest::collection::vec(any::<u8>(), 28)).prop_map(|(universe, flags)| {
        // bits 0-1: in the parent unless 0; bits 2-3: in the child unless 0; bits 4-6: the change.
        let parent = build(&universe, |i, u| (flags[i] & 3 != 0).then(|| u.clone()));
        let child = build(&universe, |i, u| {
            let f = flags[i];
            if f >> 2 & 3 == 0 {
                return None;
            }
            let mut e = u.clone();
            match f >> 4 & 7 {
                0 => e.mode ^= 0o020,
                1 => e.mtime += 1,
                2 => e.uid = 1000,
                3 => {
                    e.kind = match e.kind {
                        EntryKind::Dir => EntryKind::File {
                            data: b"was a dir".to_vec(),
                        },
                        EntryKind::File { .. } => EntryKind::Dir,
                        _ => EntryKind::Dir,
                    };
                    e.mode = if e.kind == EntryKind::Dir { 0o755 } else { 0o644 };
                }
                4 => match &mut e.kind {
                    EntryKind::File { data } => data.push(b'!'),
                    EntryKind::Symlink { target } => target.push('!'),
                    _ => {}
                },
                _ => {}
            }
            Some(e)
        });
        (parent, child)
    })
}

/// Which entries a `remove_where` call removes.
#[derive(Debug, Clone)]
enum Pred {
    /// A pseudo-random subset of paths.
    Hash { seed: u64, one_in: u64 },
    /// `path.starts_with(prefix)`.
    Prefix(String),
    /// What the glob `prefix*` matches with a literal separator: the prefix and no `/` after it.
    Glob(String),
}

impl Pred {
    fn matches(&self, e: &Entry) -> bool {
        match self {
            Pred::Hash { seed, one_in } => {
                let mut h = DefaultHasher::new();
                (seed, &e.path).hash(&mut h);
                h.finish().is_multiple_of(*one_in)
            }
            Pred::Prefix(p) => e.path.starts_with(p.as_str()),
            Pred::Glob(p) => e.path.strip_prefix(p.as_str()).is_some_and(|rest| !rest.contains('/')),
        }
    }
}

fn arb_pred() -> impl Strategy<Value = Pred> {
    let prefix = "[ab][-.a]{0,2}(/[ab][-.a]{0,1}){0,2}";
    prop_oneof![
        (any::<u64>(), 2u64..6).prop_map(|(seed, one_in)| Pred::Hash { seed, one_in }),
        prefix.prop_map(Pred::Prefix),
        prefix.prop_map(Pred::Glob),
    ]
}

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(d, _)| d)
}

/// `path` itself and every directory above it.
fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| parent_of(p))
}

fn is_at_or_below(path: &str, top: &str) -> bool {
    path == top || path.strip_prefix(top).is_some_and(|rest| rest.starts_with('/'))
}

fn is_dir(l: &Layer, path: &str) -> bool {
    l.get(path).is_some_and(|e| e.kind == EntryKind::Dir)
}

/// Apply an OCI layer changeset `diff` onto `lower`. Whiteouts (`.wh.NAME`, `.wh..wh..opq`)
/// apply to the lower layer only, before anything else of the changeset. Then each entry
/// replaces what is at its path, except that a directory over a directory only replaces the
/// attributes; a non-directory over a directory removes it with its contents, as container
/// runtimes do. Every entry must find its parent directory in place.
fn apply(lower: &Layer, diff: &Layer) -> Result<Vec<Entry>, String> {
    let mut fs: BTreeMap<String, Entry> = lower.entries().iter().map(|e| (e.path.clone(), e.clone())).collect();
    let remove_tree = |fs: &mut BTreeMap<String, Entry>, top: &str| fs.retain(|p, _| !is_at_or_below(p, top));
    let split = |path: &str| -> (Option<String>, String) {
        match path.rsplit_once('/') {
            Some((d, n)) => (Some(d.to_string()), n.to_string()),
            None => (None, path.to_string()),
        }
    };
    for e in diff.entries() {
        let (dir, name) = split(&e.path);
        if name == OPAQUE_WHITEOUT {
            match &dir {
                Some(d) => fs.retain(|p, _| !p.strip_prefix(d.as_str()).is_some_and(|r| r.starts_with('/'))),
                None => fs.clear(),
            }
        } else if let Some(gone) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = match &dir {
                Some(d) => format!("{d}/{gone}"),
                None => gone.to_string(),
            };
            if !fs.contains_key(&target) {
                return Err(format!("whiteout {} for a path the lower layer does not have", e.path));
            }
            remove_tree(&mut fs, &target);
        }
    }
    let in_dir = |fs: &BTreeMap<String, Entry>, dir: &Option<String>| {
        dir.as_ref()
            .is_none_or(|d| fs.get(d).is_some_and(|p| p.kind == EntryKind::Dir))
    };
    for e in diff.entries() {
        let (dir, name) = split(&e.path);
        if name.starts_with(WHITEOUT_PREFIX) {
            if !in_dir(&fs, &dir) {
                return Err(format!("whiteout {} is not in a directory", e.path));
            }
            continue;
        }
        if !in_dir(&fs, &dir) {
            return Err(format!("{}: no parent directory", e.path));
        }
        match fs.get(&e.path) {
            Some(old) if old.kind == EntryKind::Dir && e.kind == EntryKind::Dir => {}
            Some(_) => remove_tree(&mut fs, &e.path),
            None => {}
        }
        fs.insert(e.path.clone(), e.clone());
    }
    Ok(fs.into_values().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn layer_remove_where_keeps_every_parent(universe in arb_universe(), pred in arb_pred()) {
        let original = build(&universe, |_, u| Some(u.clone()));
        let mut l = original.clone();
        let removed = l.remove_where(|e| pred.matches(e));
        for e in l.entries() {
            if let Some(p) = parent_of(&e.path) {
                prop_assert!(is_dir(&l, p), "{} survives without its parent {}", e.path, p);
            }
        }
        // Exactly what neither matches nor lies below a match survives; the matches that are
        // not below another match are reported, in order.
        let hit = |path: &str| self_and_ancestors(path).any(|a| pred.matches(original.get(a).unwrap()));
        let expected: Vec<&Entry> = original.entries().iter().filter(|e| !hit(&e.path)).collect();
        prop_assert_eq!(l.entries().iter().collect::<Vec<_>>(), expected);
        let roots: Vec<&str> = original
            .entries()
            .iter()
            .filter(|e| pred.matches(e) && !parent_of(&e.path).is_some_and(hit))
            .map(|e| e.path.as_str())
            .collect();
        prop_assert_eq!(removed, roots);
    }

    #[test]
    fn layer_remove_where_is_idempotent(universe in arb_universe(), pred in arb_pred()) {
        let mut once = build(&universe, |_, u| Some(u.clone()));
        once.remove_where(|e| pred.matches(e));
        let mut twice = once.clone();
        let removed = twice.remove_where(|e| pred.matches(e));
        prop_assert!(removed.is_empty(), "second pass removed {:?}", removed);
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn layer_diff_entries_have_their_parent_dirs((parent, child) in arb_parent_child()) {
        let diff = child.diff_from(&parent);
        for e in diff.entries() {
            if let Some(p) = parent_of(&e.path) {
                let ok = match diff.get(p) {
                    Some(d) => d.kind == EntryKind::Dir,
                    None => is_dir(&parent, p),
                };
                prop_assert!(ok, "{} has no parent directory in the diff or the parent layer", e.path);
            }
        }
        // Nothing in the diff lies at or below a path the diff whites out.
        let whited_out: Vec<String> = diff
            .entries()
            .iter()
            .filter_map(|e| {
                let (dir, name) = e.path.rsplit_once('/').map_or(("", e.path.as_str()), |(d, n)| (d, n));
                let gone = name.strip_prefix(WHITEOUT_PREFIX)?;
                Some(if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") })
            })
            .collect();
        for w in &whited_out {
            let below: Vec<&str> =
                diff.entries().iter().map(|e| e.path.as_str()).filter(|p| is_at_or_below(p, w)).collect();
            prop_assert!(below.is_empty(), "the diff whites out {} but has {:?}", w, below);
        }
    }

    #[test]
    fn layer_diff_applied_to_the_parent_gives_the_child((parent, child) in arb_parent_child()) {
        let diff = child.diff_from(&parent);
        let applied = apply(&parent, &diff).map_err(|e| TestCaseError::fail(format!("{e}; diff: {diff:?}")))?;
        prop_assert_eq!(applied.as_slice(), child.entries());
        prop_assert!(child.diff_from(&child).entries().is_empty());
    }
}
