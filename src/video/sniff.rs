//! What an uploaded file is, from its bytes (never from what the client
//! says): the container's signature, and whether its top-level structure is
//! complete (a truncated upload is refused before any worker sees it).
//!
//! - ISO base media (MP4, QuickTime `.mov`): a sequence of boxes, each
//!   starting with a 32-bit size (1 = a 64-bit size follows, 0 = to the end
//!   of the file) and a 4-byte type; `ftyp` comes first. A complete file has
//!   a `moov` (the index, whose `mvhd` holds the duration) and an `mdat`, and
//!   its boxes end exactly at the end of the file.
//! - WebM (Matroska): EBML elements with variable-length ids and sizes; the
//!   EBML header's DocType is `webm` (or `matroska`), then one Segment whose
//!   size, when known, must fit in the file.
//!
//! The walkers here take the bytes they ask for from the caller (a few dozen
//! bytes at chosen offsets), so a 500 MB upload in object storage is checked
//! with a handful of small range reads.

use std::time::Duration;

/// A container this service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
    QuickTime,
    WebM,
}

impl Container {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::QuickTime => "quicktime",
            Self::WebM => "webm",
        }
    }
}

/// How many leading bytes [`sniff`] needs.
pub const SNIFF_BYTES: usize = 64;

/// The container, from the first bytes of the file; None when it is none of
/// the accepted ones (images, audio-only files, text, executables...).
pub fn sniff(head: &[u8]) -> Option<Container> {
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let brand = &head[8..12];
        // Audio-only and image brands of the same family are not videos.
        const NOT_VIDEO: [&[u8; 4]; 6] = [b"M4A ", b"M4B ", b"M4P ", b"heic", b"mif1", b"avif"];
        if NOT_VIDEO.iter().any(|b| brand == *b) {
            return None;
        }
        return Some(if brand == b"qt  " {
            Container::QuickTime
        } else {
            Container::Mp4
        });
    }
    if head.len() >= 4 && head[..4] == [0x1A, 0x45, 0xDF, 0xA3] {
        let doc_type = ebml_doc_type(head)?;
        return matches!(doc_type.as_slice(), b"webm" | b"matroska").then_some(Container::WebM);
    }
    None
}

/// An ISO-BMFF box header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    /// The whole box, header included; None = it runs to the end of the file.
    pub size: Option<u64>,
    pub header_len: u64,
}

/// Parses a box header from up to 16 bytes at its start.
pub fn box_header(bytes: &[u8]) -> Option<BoxHeader> {
    if bytes.len() < 8 {
        return None;
    }
    let size32 = u32::from_be_bytes(bytes[0..4].try_into().ok()?);
    let kind: [u8; 4] = bytes[4..8].try_into().ok()?;
    let (size, header_len) = match size32 {
        0 => (None, 8),
        1 => {
            let large = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
            (Some(large), 16)
        }
        n => (Some(u64::from(n)), 8),
    };
    if size.is_some_and(|s| s < header_len) {
        return None;
    }
    Some(BoxHeader {
        kind,
        size,
        header_len,
    })
}

/// The movie's duration from an `mvhd` box's payload (after its header).
pub fn mvhd_duration(payload: &[u8]) -> Option<Duration> {
    let version = *payload.first()?;
    let (timescale, duration) = if version == 1 {
        let timescale = u32::from_be_bytes(payload.get(20..24)?.try_into().ok()?);
        let duration = u64::from_be_bytes(payload.get(24..32)?.try_into().ok()?);
        (timescale, duration)
    } else {
        let timescale = u32::from_be_bytes(payload.get(12..16)?.try_into().ok()?);
        let duration = u32::from_be_bytes(payload.get(16..20)?.try_into().ok()?);
        (timescale, u64::from(duration))
    };
    // All ones means "unknown" (fragmented files).
    if timescale == 0 || duration == u64::MAX || duration == u64::from(u32::MAX) {
        return None;
    }
    Some(Duration::from_secs_f64(
        duration as f64 / f64::from(timescale),
    ))
}

/// Why a file's structure was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("the file is truncated: its {0} box runs past the end of the upload")]
    Truncated(String),
    #[error("the file is not a complete video: {0}")]
    Incomplete(&'static str),
    #[error("the file's structure is corrupt at byte {0}")]
    Corrupt(u64),
}

/// What the top-level walk of an ISO-BMFF file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mp4Summary {
    pub duration: Option<Duration>,
}

/// The state of an ISO-BMFF walk: feed it the bytes it asks for.
#[derive(Debug)]
pub struct Mp4Walk {
    total: u64,
    offset: u64,
    boxes: u32,
    seen_moov: bool,
    seen_mdat: bool,
    summary: Mp4Summary,
}

/// The next bytes a walk needs: `len` bytes at `offset` (fewer at the end of
/// the file is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub offset: u64,
    pub len: u64,
}

/// Most top-level boxes a real file has; more is garbage (or an attack on
/// the number of range reads).
const MAX_TOP_LEVEL_BOXES: u32 = 64;

impl Mp4Walk {
    pub fn new(total: u64) -> Self {
        Self {
            total,
            offset: 0,
            boxes: 0,
            seen_moov: false,
            seen_mdat: false,
            summary: Mp4Summary::default(),
        }
    }

    /// The next read, or None when the walk has reached the end of the file.
    pub fn need(&self) -> Option<Need> {
        (self.offset < self.total).then(|| Need {
            offset: self.offset,
            // A box header (16) and, for moov, the mvhd header + payload that
            // usually opens it (8 + 8 + 100 bytes).
            len: (self.total - self.offset).min(160),
        })
    }

    /// Takes the bytes of the last [`Need`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), StructureError> {
        let header = box_header(bytes).ok_or(StructureError::Corrupt(self.offset))?;
        self.boxes += 1;
        if self.boxes > MAX_TOP_LEVEL_BOXES {
            return Err(StructureError::Corrupt(self.offset));
        }
        if self.boxes == 1 && &header.kind != b"ftyp" {
            return Err(StructureError::Corrupt(0));
        }
        let name = String::from_utf8_lossy(&header.kind).into_owned();
        let end = match header.size {
            Some(size) => self
                .offset
                .checked_add(size)
                .ok_or(StructureError::Corrupt(self.offset))?,
            None => self.total,
        };
        if end > self.total {
            return Err(StructureError::Truncated(name));
        }
        match &header.kind {
            b"mdat" => self.seen_mdat = true,
            b"moov" => {
                self.seen_moov = true;
                // The first child of moov is mvhd in every muxer we know; if
                // not, the duration is left to the worker's probe.
                let child = bytes.get(header.header_len as usize..).unwrap_or_default();
                if let Some(mvhd) = box_header(child).filter(|h| &h.kind == b"mvhd") {
                    let payload = child.get(mvhd.header_len as usize..).unwrap_or_default();
                    self.summary.duration = mvhd_duration(payload);
                }
            }
            _ => {}
        }
        self.offset = end;
        Ok(())
    }

    /// The verdict once [`Mp4Walk::need`] returns None.
    pub fn finish(self) -> Result<Mp4Summary, StructureError> {
        if !self.seen_moov {
            return Err(StructureError::Incomplete("it has no movie index (moov)"));
        }
        if !self.seen_mdat {
            return Err(StructureError::Incomplete("it has no media data (mdat)"));
        }
        Ok(self.summary)
    }
}

/// An EBML variable-length integer: (value, length in bytes). For sizes the
/// marker bit is dropped; all value bits set means "unknown".
fn ebml_vint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || bytes.len() < len {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for b in &bytes[1..len] {
        value = (value << 8) | u64::from(*b);
    }
    Some((value, len))
}

/// An EBML element id keeps its marker bits.
fn ebml_id(bytes: &[u8]) -> Option<(u32, usize)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 || bytes.len() < len {
        return None;
    }
    let mut id = 0u32;
    for b in &bytes[..len] {
        id = (id << 8) | u32::from(*b);
    }
    Some((id, len))
}

const EBML_HEADER: u32 = 0x1A45_DFA3;
const EBML_DOC_TYPE: u32 = 0x4282;
const MATROSKA_SEGMENT: u32 = 0x1853_8067;

/// The DocType inside an EBML header at the start of `bytes`.
fn ebml_doc_type(bytes: &[u8]) -> Option<Vec<u8>> {
    let (id, id_len) = ebml_id(bytes)?;
    if id != EBML_HEADER {
        return None;
    }
    let (size, size_len) = ebml_vint(&bytes[id_len..])?;
    let body_start = id_len + size_len;
    let body = bytes.get(body_start..body_start + usize::try_from(size).ok()?)?;
    let mut at = 0;
    while at < body.len() {
        let (child, child_id_len) = ebml_id(&body[at..])?;
        let (child_size, child_size_len) = ebml_vint(&body[at + child_id_len..])?;
        let start = at + child_id_len + child_size_len;
        let end = start + usize::try_from(child_size).ok()?;
        if child == EBML_DOC_TYPE {
            let value = body.get(start..end)?;
            return Some(value.iter().copied().take_while(|b| *b != 0).collect());
        }
        at = end;
    }
    None
}

/// Checks a WebM file's top level from its first bytes (the EBML header and
/// the Segment's header follow each other at the start): the Segment must
/// fit in the file when its size is known.
pub fn check_webm(head: &[u8], total: u64) -> Result<(), StructureError> {
    let (_, id_len) = ebml_id(head).ok_or(StructureError::Corrupt(0))?;
    let (size, size_len) = ebml_vint(&head[id_len..]).ok_or(StructureError::Corrupt(0))?;
    let segment_at = (id_len + size_len) as u64 + size;
    let at = usize::try_from(segment_at).map_err(|_| StructureError::Corrupt(0))?;
    let rest = head.get(at..).ok_or(StructureError::Corrupt(segment_at))?;
    let (id, seg_id_len) = ebml_id(rest).ok_or(StructureError::Corrupt(segment_at))?;
    if id != MATROSKA_SEGMENT {
        return Err(StructureError::Incomplete(
            "it has no Segment after its header",
        ));
    }
    let (seg_size, seg_size_len) =
        ebml_vint(&rest[seg_id_len..]).ok_or(StructureError::Corrupt(segment_at))?;
    let unknown = seg_size == (1u64 << (7 * seg_size_len)) - 1;
    let body_start = segment_at + (seg_id_len + seg_size_len) as u64;
    if !unknown && body_start.saturating_add(seg_size) > total {
        return Err(StructureError::Truncated("Segment".into()));
    }
    if body_start >= total {
        return Err(StructureError::Incomplete("its Segment is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn mvhd(timescale: u32, duration: u32) -> Vec<u8> {
        let mut payload = vec![0u8; 100];
        payload[12..16].copy_from_slice(&timescale.to_be_bytes());
        payload[16..20].copy_from_slice(&duration.to_be_bytes());
        mp4_box(b"mvhd", &payload)
    }

    fn sample_mp4() -> Vec<u8> {
        let mut file = mp4_box(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
        file.extend(mp4_box(b"free", &[]));
        file.extend(mp4_box(b"mdat", &[7u8; 300]));
        file.extend(mp4_box(b"moov", &mvhd(1000, 12_500)));
        file
    }

    fn walk(file: &[u8]) -> Result<Mp4Summary, StructureError> {
        let mut walk = Mp4Walk::new(file.len() as u64);
        while let Some(need) = walk.need() {
            let start = need.offset as usize;
            walk.feed(&file[start..start + need.len as usize])?;
        }
        walk.finish()
    }

    #[test]
    fn an_mp4_is_recognised_by_its_ftyp_box_whatever_its_name() {
        assert_eq!(sniff(&sample_mp4()), Some(Container::Mp4));
        let mut mov = mp4_box(b"ftyp", b"qt  \0\0\0\0qt  ");
        mov.extend(mp4_box(b"mdat", &[0; 8]));
        assert_eq!(sniff(&mov), Some(Container::QuickTime));
    }

    #[test]
    fn images_audio_and_text_are_not_videos() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), None);
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"), None);
        assert_eq!(sniff(b"hello, this is not a video at all"), None);
        assert_eq!(sniff(&mp4_box(b"ftyp", b"M4A \0\0\0\0M4A ")), None);
        assert_eq!(sniff(&[]), None);
    }

    #[test]
    fn a_complete_mp4_walks_to_its_end_and_reports_its_duration() {
        let summary = walk(&sample_mp4()).expect("complete");
        assert_eq!(summary.duration, Some(Duration::from_millis(12_500)));
    }

    #[test]
    fn a_truncated_mp4_is_refused_naming_the_cut_box() {
        let file = sample_mp4();
        let cut = &file[..file.len() - 10];
        assert_eq!(walk(cut), Err(StructureError::Truncated("moov".into())));
        // Cut inside mdat: mdat runs past the end.
        assert_eq!(
            walk(&file[..120]),
            Err(StructureError::Truncated("mdat".into()))
        );
    }

    #[test]
    fn an_mp4_without_its_index_is_incomplete() {
        let mut file = mp4_box(b"ftyp", b"isom\0\0\0\0");
        file.extend(mp4_box(b"mdat", &[1; 40]));
        assert!(matches!(walk(&file), Err(StructureError::Incomplete(_))));
    }

    #[test]
    fn garbage_after_a_valid_start_is_corrupt_not_a_panic() {
        let mut file = mp4_box(b"ftyp", b"isom\0\0\0\0");
        file.extend_from_slice(&[0, 0, 0, 3, b'x', b'x', b'x', b'x']);
        assert!(matches!(walk(&file), Err(StructureError::Corrupt(_))));
        let mut huge = mp4_box(b"ftyp", b"isom\0\0\0\0");
        huge.extend_from_slice(&[0, 0, 0, 1, b'm', b'd', b'a', b't']);
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(walk(&huge).is_err());
    }

    #[test]
    fn a_box_that_runs_to_the_end_of_the_file_is_complete() {
        let mut file = mp4_box(b"ftyp", b"isom\0\0\0\0");
        file.extend(mp4_box(b"moov", &mvhd(600, 600)));
        file.extend_from_slice(&[0, 0, 0, 0, b'm', b'd', b'a', b't', 1, 2, 3]);
        assert_eq!(
            walk(&file).expect("ok").duration,
            Some(Duration::from_secs(1))
        );
    }

    fn webm(segment_size: u64, body: usize) -> Vec<u8> {
        // EBML header: DocType "webm".
        let mut header_body = vec![0x42, 0x82, 0x84];
        header_body.extend_from_slice(b"webm");
        let mut file = vec![0x1A, 0x45, 0xDF, 0xA3, 0x80 | header_body.len() as u8];
        file.extend(header_body);
        file.extend_from_slice(&[0x18, 0x53, 0x80, 0x67]);
        // An 8-byte size.
        file.push(0x01);
        file.extend_from_slice(&segment_size.to_be_bytes()[1..]);
        file.extend(std::iter::repeat_n(0u8, body));
        file
    }

    #[test]
    fn a_webm_is_recognised_and_its_segment_must_fit() {
        let good = webm(100, 100);
        assert_eq!(sniff(&good), Some(Container::WebM));
        assert_eq!(check_webm(&good, good.len() as u64), Ok(()));
        let cut = webm(100, 40);
        assert_eq!(
            check_webm(&cut, cut.len() as u64),
            Err(StructureError::Truncated("Segment".into()))
        );
        // A live recording's unknown size is accepted.
        let live = webm((1u64 << 56) - 1, 40);
        assert_eq!(check_webm(&live, live.len() as u64), Ok(()));
    }

    #[test]
    fn an_ebml_file_of_another_doc_type_is_not_a_video() {
        let mut file = vec![0x1A, 0x45, 0xDF, 0xA3, 0x87, 0x42, 0x82, 0x84];
        file.extend_from_slice(b"abcd");
        assert_eq!(sniff(&file), None);
    }
}
