//! A sanity check of the redb file header before redb sees the file.
//!
//! redb 4.x trusts parts of the header and `assert!`s on them while opening (the file must be at
//! least as long as the layout the header describes; the page size must be 4096; a region must
//! have pages). A truncated or damaged file would then panic, which aborts the agent in release
//! builds (`panic = "abort"`) on every start. This check rejects such files first, so that they
//! are moved aside instead.
//!
//! It mirrors redb's file format version 3 header (redb `tree_store/page_store/header.rs`):
//! ```text
//! 0..9   magic number          12..16 page size (u32 LE)
//! 9      god byte              16..20 region header pages
//! 10..12 padding               20..24 region max data pages
//!                              24..28 number of full regions
//!                              28..32 data pages in the trailing partial region
//! 64..320 two commit slots (checked by redb, with checksums)
//! ```
//! The layout is: one super-header page, then the full regions, then the trailing region; each
//! region is its header pages followed by its data pages.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const HEADER_LEN: usize = 320;
const PAGE_SIZE: u64 = 4096;

fn u32_at(b: &[u8], off: usize) -> u64 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&b[off..off + 4]);
    u64::from(u32::from_le_bytes(le))
}

/// Why `file` must not be handed to redb, or `None` if redb may open it (which includes files
/// without redb's magic number: redb rejects those with an error, not a panic).
pub(super) fn header_problem(file: &File) -> io::Result<Option<String>> {
    let file_len = file.metadata()?.len();
    let mut buf = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let header = &buf[..filled];
    if header.len() < MAGIC.len() || header[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    if header.len() < HEADER_LEN {
        return Ok(Some(format!(
            "truncated: {file_len} bytes, shorter than the redb header"
        )));
    }
    let page_size = u32_at(header, 12);
    if page_size != PAGE_SIZE {
        return Ok(Some(format!(
            "header has page size {page_size}, not {PAGE_SIZE}"
        )));
    }
    let region_header_pages = u32_at(header, 16);
    let region_max_data_pages = u32_at(header, 20);
    let full_regions = u32_at(header, 24);
    let trailing_pages = u32_at(header, 28);
    if region_max_data_pages == 0 {
        return Ok(Some("header describes regions without pages".into()));
    }
    if full_regions == 0 && trailing_pages == 0 {
        return Ok(Some("header describes no regions".into()));
    }
    let pages = |n: u64| n.checked_mul(PAGE_SIZE);
    let layout_len = (|| {
        let full = pages(region_header_pages.checked_add(region_max_data_pages)?)?
            .checked_mul(full_regions)?;
        let trailing = if trailing_pages > 0 {
            pages(region_header_pages.checked_add(trailing_pages)?)?
        } else {
            0
        };
        PAGE_SIZE.checked_add(full)?.checked_add(trailing)
    })();
    Ok(match layout_len {
        None => Some("header describes an impossibly large layout".into()),
        Some(want) if file_len < want => Some(format!(
            "truncated: {file_len} bytes, header describes {want}"
        )),
        Some(_) => None,
    })
}

/// God-byte flag: the file was not closed cleanly and must be verified and repaired on open.
const RECOVERY_REQUIRED: u8 = 2;
const GOD_BYTE_OFFSET: u64 = 9;

/// Mark a redb file as needing recovery, so that redb takes its crash-recovery path on open:
/// it then checks the commit slots' checksums and falls back to the other slot, and rebuilds the
/// allocator state while verifying every page's checksum. After a clean shutdown redb would trust
/// the primary commit slot without checking its checksum, and damage there makes it panic later.
/// Every `kill -9` leaves this flag set anyway, so this is the well-trodden path. Files without
/// redb's magic number are left alone.
pub(super) fn force_recovery(file: &File) -> io::Result<()> {
    let mut head = [0u8; MAGIC.len() + 1];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if head[..MAGIC.len()] != MAGIC {
        return Ok(());
    }
    let god = head[MAGIC.len()];
    if god & RECOVERY_REQUIRED == 0 {
        file.write_all_at(&[god | RECOVERY_REQUIRED], GOD_BYTE_OFFSET)?;
    }
    Ok(())
}
