//! Laying a tree out as a squashfs image: data blocks, inodes, directories, tables.

use std::collections::{BTreeMap, HashMap};

use super::compress::{Codec, compress_all, compressor_id};
use super::metadata::{self, MetadataWriter};
use super::{Error, NO_TABLE, Options, PAD_TO, SUPERBLOCK_SIZE, Superblock, flags};
use crate::tree::{Kind, NodeId, Tree};

/// Block size entry bit: the block is stored uncompressed.
const RAW_BLOCK: u32 = 1 << 24;
/// "No fragment" / "no xattrs" in an inode.
const NONE32: u32 = u32::MAX;

/// Inode types (basic; the extended type is the basic one + 7).
mod kind {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEV: u16 = 4;
    pub const CHAR_DEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const EXTENDED: u16 = 7;
}

/// The order inodes are written and numbered in, and names for error messages.
struct Walk {
    /// Nodes in inode order: post-order, a hardlinked node at its first path.
    order: Vec<NodeId>,
    /// Inode number of each node (by node index), 1-based.
    number: Vec<u32>,
    /// Inode number of each directory's parent (by node index).
    parent: Vec<u32>,
    /// The first path of each node (by node index), for errors.
    path: Vec<String>,
}

impl Walk {
    fn new(tree: &Tree) -> Walk {
        let n = tree.node_count();
        let mut walk = Walk {
            order: Vec::with_capacity(n),
            number: vec![0; n],
            parent: vec![0; n],
            path: vec![String::new(); n],
        };
        let mut seen = vec![false; n];
        seen[NodeId::ROOT.index()] = true;
        walk.visit(tree, NodeId::ROOT, &mut seen);
        for (i, id) in walk.order.iter().enumerate() {
            walk.number[id.index()] = i as u32 + 1;
        }
        // The root's parent is one past the last inode, as mksquashfs writes it.
        walk.parent[NodeId::ROOT.index()] = n as u32 + 1;
        for id in &walk.order {
            for (_, child) in tree.node(*id).children() {
                if tree.node(child).is_dir() {
                    walk.parent[child.index()] = walk.number[id.index()];
                }
            }
        }
        walk
    }

    fn visit(&mut self, tree: &Tree, dir: NodeId, seen: &mut [bool]) {
        for (name, child) in tree.node(dir).children() {
            if std::mem::replace(&mut seen[child.index()], true) {
                continue; // a hardlink to a node met before
            }
            let parent = &self.path[dir.index()];
            self.path[child.index()] = if parent.is_empty() {
                name.to_owned()
            } else {
                format!("{parent}/{name}")
            };
            if tree.node(child).is_dir() {
                self.visit(tree, child, seen);
            } else {
                self.order.push(child);
            }
        }
        self.order.push(dir);
    }
}

/// Where a file's contents went.
#[derive(Clone, Default)]
struct FileData {
    /// Position of the first stored block in the image.
    start: u64,
    /// Block size entries (stored length | [`RAW_BLOCK`]; 0 for a hole).
    sizes: Vec<u32>,
    /// Fragment index and offset of the tail, if the file is smaller than a block.
    fragment: Option<(u32, u32)>,
    /// Bytes in holes.
    sparse: u64,
}

/// One block of a file before compression: a job for the compressors, or a hole.
enum Block {
    Job(usize),
    Hole,
}

/// A distinct file content's blocks, and its (fragment index, offset) if it is in a fragment.
type Plan = (Vec<Block>, Option<(u32, u32)>);

/// Plan and write the data region; returns each file's [`FileData`] (by node index) and the
/// fragment table entries.
fn write_data(
    tree: &Tree,
    walk: &Walk,
    opts: &Options,
    threads: usize,
    image: &mut Vec<u8>,
) -> Result<(Vec<FileData>, Vec<u8>), Error> {
    let bs = opts.block_size as usize;
    let mut jobs: Vec<&[u8]> = Vec::new();
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut open_fragment: Vec<u8> = Vec::new();
    // Per distinct content: its blocks and fragment slot.
    let mut plans: Vec<Plan> = Vec::new();
    let mut plan_of: Vec<Option<usize>> = vec![None; tree.node_count()];
    let mut by_content: HashMap<&[u8], usize> = HashMap::new();

    for id in &walk.order {
        let Kind::File(data) = tree.node(*id).kind() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let plan = *by_content.entry(data.as_slice()).or_insert_with(|| {
            let mut blocks = Vec::new();
            let mut fragment = None;
            if data.len() >= bs {
                for chunk in data.chunks(bs) {
                    if chunk.len() == bs && chunk.iter().all(|&b| b == 0) {
                        blocks.push(Block::Hole);
                    } else {
                        blocks.push(Block::Job(jobs.len()));
                        jobs.push(chunk);
                    }
                }
            } else {
                if open_fragment.len() + data.len() > bs {
                    fragments.push(std::mem::take(&mut open_fragment));
                }
                fragment = Some((fragments.len() as u32, open_fragment.len() as u32));
                open_fragment.extend_from_slice(data);
            }
            plans.push((blocks, fragment));
            plans.len() - 1
        });
        plan_of[id.index()] = Some(plan);
    }
    if !open_fragment.is_empty() {
        fragments.push(open_fragment);
    }
    let data_jobs = jobs.len();
    jobs.extend(fragments.iter().map(Vec::as_slice));

    let packed = compress_all(&jobs, opts.compression, opts.block_size, threads)?;
    let mut placed = Vec::with_capacity(packed.len());
    for p in packed {
        placed.push((
            image.len() as u64,
            p.bytes.len() as u32 | if p.raw { RAW_BLOCK } else { 0 },
        ));
        image.extend_from_slice(&p.bytes);
    }

    let mut fragment_table = Vec::with_capacity(fragments.len() * 16);
    for (start, size) in &placed[data_jobs..] {
        fragment_table.extend_from_slice(&start.to_le_bytes());
        fragment_table.extend_from_slice(&size.to_le_bytes());
        fragment_table.extend_from_slice(&0u32.to_le_bytes());
    }

    let files: Vec<FileData> = plans
        .iter()
        .map(|(blocks, fragment)| {
            let mut file = FileData {
                fragment: *fragment,
                ..FileData::default()
            };
            // The kernel finds block n at `start` plus the sizes before it; holes take no
            // room, so `start` is where the first stored block is.
            let first_stored = blocks.iter().find_map(|b| match b {
                Block::Job(j) => Some(placed[*j].0),
                Block::Hole => None,
            });
            file.start = first_stored.unwrap_or(0);
            for block in blocks {
                match block {
                    Block::Job(j) => file.sizes.push(placed[*j].1),
                    Block::Hole => {
                        file.sizes.push(0);
                        file.sparse += opts.block_size as u64;
                    }
                }
            }
            file
        })
        .collect();
    let by_node = plan_of
        .into_iter()
        .map(|p| p.map(|p| files[p].clone()).unwrap_or_default())
        .collect();
    Ok((by_node, fragment_table))
}

/// Distinct extended attribute sets, numbered in first-use order.
#[derive(Default)]
struct Xattrs {
    ids: HashMap<Vec<u8>, u32>,
    /// Encoded key/value entries and their count, by id.
    sets: Vec<(Vec<u8>, u32)>,
}

impl Xattrs {
    /// The xattr id for a node's attributes, [`NONE32`] when it has none.
    fn id(&mut self, xattrs: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<u32, Error> {
        if xattrs.is_empty() {
            return Ok(NONE32);
        }
        let mut encoded = Vec::new();
        for (name, value) in xattrs {
            let (prefix, suffix) = [("user.", 0u16), ("trusted.", 1), ("security.", 2)]
                .into_iter()
                .find_map(|(p, t)| name.strip_prefix(p).map(|s| (t, s)))
                .ok_or_else(|| Error::UnsupportedXattr {
                    path: path.to_owned(),
                    name: name.clone(),
                })?;
            encoded.extend_from_slice(&prefix.to_le_bytes());
            encoded.extend_from_slice(&(suffix.len() as u16).to_le_bytes());
            encoded.extend_from_slice(suffix.as_bytes());
            encoded.extend_from_slice(&(value.len() as u32).to_le_bytes());
            encoded.extend_from_slice(value);
        }
        let next = self.sets.len() as u32;
        let id = *self.ids.entry(encoded.clone()).or_insert(next);
        if id == next {
            self.sets.push((encoded, xattrs.len() as u32));
        }
        Ok(id)
    }
}

/// Device number as squashfs (and Linux's `new_encode_dev`) stores it.
fn encode_dev(major: u32, minor: u32, path: &str) -> Result<u32, Error> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(Error::DeviceOutOfRange {
            path: path.to_owned(),
            major,
            minor,
        });
    }
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// Little-endian byte builder.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// Basic inode type of a node, as directory entries record it.
fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Directory => kind::DIR,
        Kind::File(_) => kind::FILE,
        Kind::Symlink(_) => kind::SYMLINK,
        Kind::BlockDevice { .. } => kind::BLOCK_DEV,
        Kind::CharDevice { .. } => kind::CHAR_DEV,
        Kind::Fifo => kind::FIFO,
        Kind::Socket => kind::SOCKET,
    }
}

/// A directory's entries, as the directory table stores them: runs of up to 256 entries
/// whose inodes share a metadata block and lie within ±32767 inode numbers of the run's
/// first, each run under a header.
fn directory_listing(tree: &Tree, dir: NodeId, walk: &Walk, refs: &[u64]) -> Vec<u8> {
    let entries: Vec<(&str, NodeId)> = tree.node(dir).children().collect();
    let mut out = Bytes::default();
    let mut i = 0;
    while i < entries.len() {
        let first = entries[i].1;
        let block = refs[first.index()] >> 16;
        let base = walk.number[first.index()];
        let run = entries[i..]
            .iter()
            .take(256)
            .take_while(|(_, id)| {
                let delta = i64::from(walk.number[id.index()]) - i64::from(base);
                refs[id.index()] >> 16 == block && i16::try_from(delta).is_ok()
            })
            .count();
        out.u32(run as u32 - 1).u32(block as u32).u32(base);
        for (name, id) in &entries[i..i + run] {
            let delta = (walk.number[id.index()] as i64 - base as i64) as i16;
            out.u16((refs[id.index()] & 0xffff) as u16)
                .u16(delta as u16)
                .u16(basic_type(tree.node(*id).kind()))
                .u16(name.len() as u16 - 1)
                .raw(name.as_bytes());
        }
        i += run;
    }
    out.0
}

/// Build the whole image: superblock, data, tables, padding.
pub(super) fn build(tree: &Tree, opts: &Options, threads: usize) -> Result<Vec<u8>, Error> {
    let walk = Walk::new(tree);

    // Owners and groups, sorted, and mtimes checked before any compression work.
    let mut ids: BTreeMap<u32, u16> = BTreeMap::new();
    for id in &walk.order {
        let meta = tree.node(*id).metadata();
        ids.insert(meta.uid, 0);
        ids.insert(meta.gid, 0);
        if u32::try_from(meta.mtime).is_err() {
            return Err(Error::MtimeOutOfRange {
                path: walk.path[id.index()].clone(),
                mtime: meta.mtime,
            });
        }
    }
    if ids.len() > usize::from(u16::MAX) {
        return Err(Error::TooManyIds { count: ids.len() });
    }
    for (i, index) in ids.values_mut().enumerate() {
        *index = i as u16;
    }

    let mut image = vec![0u8; SUPERBLOCK_SIZE];
    let (files, fragment_entries) = write_data(tree, &walk, opts, threads, &mut image)?;

    let codec = || Codec::new(opts.compression, opts.block_size);
    let mut inodes = MetadataWriter::new(codec()?);
    let mut dirs = MetadataWriter::new(codec()?);
    let mut xattrs = Xattrs::default();
    let mut refs = vec![0u64; tree.node_count()];
    for id in &walk.order {
        let node = tree.node(*id);
        let meta = node.metadata();
        let path = &walk.path[id.index()];
        let xattr = xattrs.id(&meta.xattrs, path)?;
        let links = node.path_count();
        let mut inode = Bytes::default();
        // Header: type (filled below), mode, uid index, gid index, mtime, number.
        let header = |inode: &mut Bytes, ty: u16| {
            inode
                .u16(ty)
                .u16(meta.mode as u16)
                .u16(ids[&meta.uid])
                .u16(ids[&meta.gid]);
            inode.u32(meta.mtime as u32).u32(walk.number[id.index()]);
        };
        let ext = |basic: u16| {
            if xattr != NONE32 || links > 1 {
                basic + kind::EXTENDED
            } else {
                basic
            }
        };
        match node.kind() {
            Kind::Directory => {
                let listing = directory_listing(tree, *id, &walk, &refs);
                let (block, offset) = dirs.position();
                dirs.write(&listing)?;
                let size = listing.len() as u32 + 3;
                let nlink = 2 + node.children().filter(|(_, c)| tree.node(*c).is_dir()).count() as u32;
                let parent = walk.parent[id.index()];
                if xattr == NONE32 && size <= 0xffff {
                    header(&mut inode, kind::DIR);
                    inode.u32(block).u32(nlink).u16(size as u16).u16(offset).u32(parent);
                } else {
                    header(&mut inode, kind::DIR + kind::EXTENDED);
                    inode
                        .u32(nlink)
                        .u32(size)
                        .u32(block)
                        .u32(parent)
                        .u16(0)
                        .u16(offset)
                        .u32(xattr);
                }
            }
            Kind::File(data) => {
                let file = &files[id.index()];
                let (frag, frag_offset) = file.fragment.unwrap_or((NONE32, 0));
                let size = data.len() as u64;
                let small = u32::try_from(file.start).is_ok() && u32::try_from(size).is_ok();
                if xattr == NONE32 && links == 1 && file.sparse == 0 && small {
                    header(&mut inode, kind::FILE);
                    inode.u32(file.start as u32).u32(frag).u32(frag_offset).u32(size as u32);
                } else {
                    header(&mut inode, kind::FILE + kind::EXTENDED);
                    inode.u64(file.start).u64(size).u64(file.sparse).u32(links);
                    inode.u32(frag).u32(frag_offset).u32(xattr);
                }
                for s in &file.sizes {
                    inode.u32(*s);
                }
            }
            Kind::Symlink(target) => {
                header(&mut inode, ext(kind::SYMLINK));
                inode.u32(links).u32(target.len() as u32).raw(target.as_bytes());
                if xattr != NONE32 || links > 1 {
                    inode.u32(xattr);
                }
            }
            Kind::BlockDevice { major, minor } | Kind::CharDevice { major, minor } => {
                header(&mut inode, ext(basic_type(node.kind())));
                inode.u32(links).u32(encode_dev(*major, *minor, path)?);
                if xattr != NONE32 || links > 1 {
                    inode.u32(xattr);
                }
            }
            Kind::Fifo | Kind::Socket => {
                header(&mut inode, ext(basic_type(node.kind())));
                inode.u32(links);
                if xattr != NONE32 || links > 1 {
                    inode.u32(xattr);
                }
            }
        }
        refs[id.index()] = inodes.reference();
        inodes.write(&inode.0)?;
    }
    let root_inode = refs[NodeId::ROOT.index()];

    let inode_table = image.len() as u64;
    image.extend_from_slice(&inodes.finish()?.0);
    let directory_table = image.len() as u64;
    image.extend_from_slice(&dirs.finish()?.0);

    let fragment_count = (fragment_entries.len() / 16) as u32;
    let fragment_table = if fragment_count == 0 {
        image.len() as u64
    } else {
        metadata::append_table(&mut image, &fragment_entries, codec()?)?
    };
    let id_entries: Vec<u8> = ids.keys().flat_map(|id| id.to_le_bytes()).collect();
    let id_table = metadata::append_table(&mut image, &id_entries, codec()?)?;
    let xattr_id_table = if xattrs.sets.is_empty() {
        NO_TABLE
    } else {
        append_xattrs(&mut image, &xattrs, codec)?
    };

    let superblock = Superblock {
        inode_count: walk.order.len() as u32,
        mtime: opts.mtime,
        block_size: opts.block_size,
        fragment_count,
        compressor: compressor_id(opts.compression),
        flags: flags::DUPLICATES | if xattrs.sets.is_empty() { flags::NO_XATTRS } else { 0 },
        id_count: ids.len() as u16,
        root_inode,
        bytes_used: image.len() as u64,
        id_table,
        xattr_id_table,
        inode_table,
        directory_table,
        fragment_table,
        export_table: NO_TABLE,
    };
    image[..SUPERBLOCK_SIZE].copy_from_slice(&superblock.to_bytes());
    image.resize(image.len().next_multiple_of(PAD_TO), 0);
    Ok(image)
}

/// Append the xattr tables: key/value entries, the id table (reference, count, size per
/// set) and its header with the index. Returns the header's position.
fn append_xattrs(image: &mut Vec<u8>, xattrs: &Xattrs, codec: impl Fn() -> Result<Codec, Error>) -> Result<u64, Error> {
    let mut kv = MetadataWriter::new(codec()?);
    let mut id_entries = Bytes::default();
    for (encoded, count) in &xattrs.sets {
        id_entries.u64(kv.reference()).u32(*count).u32(encoded.len() as u32);
        kv.write(encoded)?;
    }
    let kv_start = image.len() as u64;
    image.extend_from_slice(&kv.finish()?.0);

    let mut ids = MetadataWriter::new(codec()?);
    ids.write(&id_entries.0)?;
    let (blocks, starts) = ids.finish()?;
    let ids_start = image.len() as u64;
    image.extend_from_slice(&blocks);

    let header = image.len() as u64;
    let mut table = Bytes::default();
    table.u64(kv_start).u32(xattrs.sets.len() as u32).u32(0);
    for start in starts {
        table.u64(ids_start + start);
    }
    image.extend_from_slice(&table.0);
    Ok(header)
}
