//! The DCS view packed into one byte buffer (contract 0.3.0's `packed-view`).
//!
//! Why: a view crossing the component boundary as records costs one guest allocation per
//! string and per-field lowering on the host (13 strings a group); packed it is one copy, and
//! the policy reads its strings in place. The packer also marks each group whose bytes are
//! the same as in the previous view, so a steady heartbeat skips the groups it already settled.
//! The layout is documented in `wit/since_v0.3.0/policy.wit`; the packer here is what the host
//! (and the native baseline) use, the reader is what the policy uses.

use crate::dcs::{ClusterView, GroupView, Member, MemberRef};
use crate::error::InvalidInput;
use crate::node::{GroupId, COORDINATOR_GROUP};
use std::sync::atomic::{AtomicU64, Ordering};

pub const MAGIC: &[u8; 4] = b"CHV1";
/// Group flag: the body is byte for byte the body of the same group in view `base`.
pub const UNCHANGED: u8 = 1;
const NONE: u32 = u32::MAX;

/// One packed view as the contract passes it.
#[derive(Clone, Copy, Debug)]
pub struct PackedView<'a> {
    pub seq: u64,
    pub base: Option<u64>,
    pub bytes: &'a [u8],
}

/// Views are numbered from one counter per process, so a `base` can never name a view that a
/// different packer produced for the same handler (after a swap or a trap recovery).
static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

/// Packs successive views for one handler, marking the groups that did not change.
///
/// It keeps one buffer: the last view. A view equal to it group for group is "packed" by
/// comparing each freshly encoded group (in a small scratch buffer) with its bytes and setting
/// the flags in place, so the steady case writes nothing large; the first group that differs
/// starts a new buffer (the equal prefix copied), which replaces the old one at the end.
#[derive(Debug, Default)]
pub struct Packer {
    seq: Option<u64>,
    bytes: Vec<u8>,
    /// (group id, header start, body start, body end) of `bytes`, in order.
    groups: Vec<GroupIndex>,
    /// One group (header and body) as just encoded.
    scratch: Vec<u8>,
    /// Scratch for a group's shape while its text is written.
    shape: Vec<u8>,
}

type GroupIndex = (GroupId, usize, usize, usize);

/// Header of a group: id, flags, body length.
const GROUP_HEADER: usize = 9;

/// The new buffer, once a view differs from the last one.
type Fresh = Option<(Vec<u8>, Vec<GroupIndex>)>;

impl Packer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the previous view: the next one is sent with no `base` (after the handler behind
    /// this packer was replaced, or a call with the view failed).
    pub fn reset(&mut self) {
        self.seq = None;
    }

    /// Packs `view`, with unchanged marks relative to the previous call's view.
    pub fn pack(&mut self, view: &ClusterView) -> PackedView<'_> {
        let base = self.seq;
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let count = (view.workers.len() + 1) as u32;
        let same_header = self.bytes.len() >= 8
            && self.bytes[..4] == *MAGIC
            && self.bytes[4..8] == count.to_le_bytes();
        let mut fresh: Fresh = if same_header {
            None
        } else {
            let mut b = Vec::with_capacity(self.bytes.len().max(64));
            b.extend_from_slice(MAGIC);
            b.extend_from_slice(&count.to_le_bytes());
            Some((b, Vec::with_capacity(count as usize)))
        };
        let mut cursor = (0, 0);
        self.put(
            &mut fresh,
            &mut cursor,
            base,
            COORDINATOR_GROUP,
            &view.coordinator,
        );
        if view.workers.windows(2).all(|w| w[0].0 < w[1].0) {
            for (g, v) in &view.workers {
                self.put(&mut fresh, &mut cursor, base, *g, v);
            }
        } else {
            let mut sorted: Vec<&(GroupId, GroupView)> = view.workers.iter().collect();
            sorted.sort_by_key(|(g, _)| *g);
            for (g, v) in sorted {
                self.put(&mut fresh, &mut cursor, base, *g, v);
            }
        }
        if let Some((b, index)) = fresh {
            self.bytes = b;
            self.groups = index;
        }
        self.seq = Some(seq);
        PackedView {
            seq,
            base,
            bytes: &self.bytes,
        }
    }

    /// Group number `cursor.0` of the new view; `cursor.1` walks the last view's groups.
    fn put(
        &mut self,
        fresh: &mut Fresh,
        cursor: &mut (usize, usize),
        base: Option<u64>,
        g: GroupId,
        v: &GroupView,
    ) {
        let (i, at_prev) = cursor;
        self.scratch.clear();
        write_group(&mut self.scratch, &mut self.shape, g, v);
        let body = &self.scratch[GROUP_HEADER..];
        while *at_prev < self.groups.len() && self.groups[*at_prev].0 < g {
            *at_prev += 1;
        }
        let same = self
            .groups
            .get(*at_prev)
            .is_some_and(|&(pg, _, f, t)| pg == g && self.bytes[f..t] == *body);
        let flag = if same && base.is_some() { UNCHANGED } else { 0 };
        if fresh.is_none() {
            if same && *at_prev == *i {
                let head = self.groups[*i].1;
                self.bytes[head + 4] = flag;
                *i += 1;
                return;
            }
            // The first difference: the groups before it stay as they are.
            let cut = self.groups.get(*i).map_or(self.bytes.len(), |x| x.1);
            let mut b = Vec::with_capacity(self.bytes.len());
            b.extend_from_slice(&self.bytes[..cut]);
            *fresh = Some((b, self.groups[..*i].to_vec()));
        }
        let (b, index) = fresh.as_mut().expect("set above");
        let head = b.len();
        b.extend_from_slice(&self.scratch);
        b[head + 4] = flag;
        index.push((g, head, head + GROUP_HEADER, b.len()));
        *i += 1;
    }
}

/// Packs a view on its own, with no unchanged marks.
pub fn pack_once(view: &ClusterView) -> Vec<u8> {
    let mut p = Packer::new();
    p.pack(view);
    p.bytes
}

/// Appends one group (header and body) to `out`. The body is the group's text (every string,
/// one after the other) and then its shape (lengths and flags), so a reader checks the text
/// for UTF-8 once and slices it, instead of checking each string.
fn write_group(out: &mut Vec<u8>, shape: &mut Vec<u8>, g: GroupId, v: &GroupView) {
    out.extend_from_slice(&g.to_le_bytes());
    out.push(0);
    let len_at = out.len();
    out.extend_from_slice(&[0; 8]);
    let from = len_at + 4;
    shape.clear();
    let mut w = GroupWriter { text: out, shape };
    w.opt_str(v.leader.as_deref());
    w.shape
        .extend_from_slice(&(v.members.len() as u32).to_le_bytes());
    for m in &v.members {
        w.member(m);
    }
    let text_len = (out.len() - from - 4) as u32;
    out[from..from + 4].copy_from_slice(&text_len.to_le_bytes());
    out.extend_from_slice(shape);
    let len = (out.len() - from) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

struct GroupWriter<'a> {
    text: &'a mut Vec<u8>,
    shape: &'a mut Vec<u8>,
}

impl GroupWriter<'_> {
    fn member(&mut self, m: &Member) {
        self.str(&m.name);
        self.opt_str(m.conn_url.as_deref());
        match &m.conn_kwargs {
            Some(k) => {
                self.shape.push(1);
                self.opt_str(k.host.as_deref());
                self.opt_str(k.port.as_deref());
            }
            None => self.shape.push(0),
        }
        self.opt_str(m.role.as_deref());
        self.opt_str(m.state.as_deref());
        self.shape.push(m.noloadbalance as u8);
    }

    fn str(&mut self, s: &str) {
        self.shape
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.text.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.shape.extend_from_slice(&NONE.to_le_bytes()),
        }
    }
}

// ----- reading ----------------------------------------------------------------------------

/// One group's header; its body is decoded only when the policy needs it.
#[derive(Clone, Copy, Debug)]
pub struct GroupEntry<'a> {
    pub id: GroupId,
    pub unchanged: bool,
    body: &'a [u8],
    /// Offset of the body in the whole view, for error messages.
    at: usize,
}

/// What is wrong with a packed view, and where (byte offset in the whole view). Small, so
/// that reading a valid view pays nothing for the error path; it becomes an [`InvalidInput`]
/// naming the field `view` at the contract boundary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}byte {at}: {problem}", group.map(|g| format!("group {g}: ")).unwrap_or_default())]
pub struct BadView {
    pub group: Option<GroupId>,
    pub at: usize,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("does not start with \"CHV1\"")]
    Magic,
    #[error("claims {count} groups in {len} bytes")]
    GroupCount { count: usize, len: usize },
    #[error("unknown group flags {0:#x}")]
    Flags(u8),
    #[error("group {id}: body of {len} bytes runs past the end")]
    BodyPastEnd { id: GroupId, len: usize },
    #[error("first group is {0}, not the coordinator's 0")]
    FirstNotCoordinator(GroupId),
    #[error("group {id} follows group {prev}: ids must ascend")]
    Order { id: GroupId, prev: GroupId },
    #[error("no groups: the coordinator's group comes first")]
    NoGroups,
    #[error("bytes after the last group")]
    TrailingGroups,
    #[error("claims {0} members")]
    MemberCount(usize),
    #[error("{field} is {value}, not 0 or 1")]
    NotBool { field: &'static str, value: u8 },
    #[error("bytes after the last member")]
    TrailingMembers,
    #[error("needs {0} more bytes, the view ends")]
    Truncated(usize),
    #[error("a required string is absent")]
    AbsentString,
    #[error("a string of {0} bytes runs past the group's text or splits a character")]
    TextSpan(usize),
    #[error("text after the last string")]
    TrailingText,
    #[error("refused by the fast reader, accepted by the careful one (a policy bug)")]
    Inconsistent,
    #[error("string is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
}

impl From<BadView> for InvalidInput {
    fn from(e: BadView) -> Self {
        InvalidInput::new("view", e.to_string())
    }
}

fn bad(at: usize, problem: Problem) -> BadView {
    BadView {
        group: None,
        at,
        problem,
    }
}

/// The group headers of a packed view, checked: magic, count, ascending ids (coordinator
/// first), bodies within the buffer. Bodies are checked when decoded.
pub fn groups(bytes: &[u8]) -> Result<Vec<GroupEntry<'_>>, BadView> {
    Groups::new(bytes)?.collect()
}

/// The group headers one by one, checked as [`groups`] checks them, without a list: a steady
/// heartbeat walks the headers of a large view twice and reads no body.
pub struct Groups<'a> {
    r: Reader<'a>,
    left: usize,
    prev: Option<GroupId>,
    failed: bool,
}

impl<'a> Groups<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, BadView> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take::<BadView>(4)? != MAGIC {
            return Err(bad(0, Problem::Magic));
        }
        let count = r.u32::<BadView>()? as usize;
        // Each group takes at least 13 bytes: a count beyond that is a lie.
        if count > bytes.len() / 13 + 1 {
            return Err(bad(
                4,
                Problem::GroupCount {
                    count,
                    len: bytes.len(),
                },
            ));
        }
        if count == 0 {
            return Err(bad(4, Problem::NoGroups));
        }
        Ok(Groups {
            r,
            left: count,
            prev: None,
            failed: false,
        })
    }

    fn entry(&mut self) -> Result<GroupEntry<'a>, BadView> {
        let (pos, prev, left) = (self.r.pos, self.prev, self.left);
        // The fast pass learns only *that* a header is wrong; then it is read again to say how.
        self.entry_with::<Refused>().map_err(|Refused| {
            (self.r.pos, self.prev, self.left) = (pos, prev, left);
            match self.entry_with::<BadView>() {
                Err(e) => e,
                Ok(_) => bad(pos, Problem::Inconsistent),
            }
        })
    }

    #[inline]
    fn entry_with<E: Report>(&mut self) -> Result<GroupEntry<'a>, E> {
        let r = &mut self.r;
        let head = r.pos;
        let id = r.i32::<E>()?;
        let flags = r.u8::<E>()?;
        if flags & !UNCHANGED != 0 {
            return Err(E::problem(head + 4, || Problem::Flags(flags)));
        }
        let len = r.u32::<E>()? as usize;
        let at = r.pos;
        let body = r
            .take::<E>(len)
            .map_err(|_| E::problem(head, || Problem::BodyPastEnd { id, len }))?;
        match self.prev {
            None if id != COORDINATOR_GROUP => {
                return Err(E::problem(head, || Problem::FirstNotCoordinator(id)))
            }
            Some(prev) if id <= prev => {
                return Err(E::problem(head, || Problem::Order { id, prev }))
            }
            _ => {}
        }
        self.prev = Some(id);
        self.left -= 1;
        if self.left == 0 && self.r.pos != self.r.bytes.len() {
            return Err(E::problem(self.r.pos, || Problem::TrailingGroups));
        }
        Ok(GroupEntry {
            id,
            unchanged: flags & UNCHANGED != 0,
            body,
            at,
        })
    }
}

impl<'a> Iterator for Groups<'a> {
    type Item = Result<GroupEntry<'a>, BadView>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        let e = self.entry();
        self.failed = e.is_err();
        Some(e)
    }
}

impl<'a> GroupEntry<'a> {
    /// The body: the leader key, and the members appended to `members` (which the caller
    /// reuses). The text is checked to be UTF-8 once, every length against it.
    pub fn decode(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, BadView> {
        let start = members.len();
        // The fast pass learns only *that* something is wrong; a refused body is read again
        // to say what and where.
        match self.decode_with::<Refused>(members) {
            Ok(leader) => Ok(leader),
            Err(Refused) => {
                members.truncate(start);
                let e = match self.decode_with::<BadView>(members) {
                    Err(e) => e,
                    Ok(_) => bad(0, Problem::Inconsistent),
                };
                members.truncate(start);
                Err(BadView {
                    group: Some(self.id),
                    at: e.at + self.at,
                    problem: e.problem,
                })
            }
        }
    }

    fn decode_with<E: Report>(
        &self,
        members: &mut Vec<MemberRef<'a>>,
    ) -> Result<Option<&'a str>, E> {
        let mut r = Reader {
            bytes: self.body,
            pos: 0,
        };
        let text_len = r.u32::<E>()? as usize;
        let text_at = r.pos;
        let bytes = r.take::<E>(text_len)?;
        let text = if bytes.is_ascii() {
            // SAFETY: every byte is ASCII, so the bytes are UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).map_err(|e| E::problem(text_at, || Problem::NotUtf8(e)))?
        };
        let mut t = Text { text, pos: 0 };
        let leader = t.opt::<E>(&mut r)?;
        let count = r.u32::<E>()? as usize;
        if count > self.body.len() / 11 {
            return Err(E::problem(r.pos - 4, || Problem::MemberCount(count)));
        }
        members.reserve(count);
        for _ in 0..count {
            let name = t.required::<E>(&mut r)?;
            let conn_url = t.opt::<E>(&mut r)?;
            let conn_kwargs = if r.bool::<E>("has-kwargs")? {
                Some((t.opt::<E>(&mut r)?, t.opt::<E>(&mut r)?))
            } else {
                None
            };
            let role = t.opt::<E>(&mut r)?;
            let state = t.opt::<E>(&mut r)?;
            let noloadbalance = r.bool::<E>("noloadbalance")?;
            members.push(MemberRef {
                name,
                conn_url,
                conn_kwargs,
                role,
                state,
                noloadbalance,
            });
        }
        if t.pos != text.len() {
            return Err(E::problem(text_at + t.pos, || Problem::TrailingText));
        }
        if r.pos != self.body.len() {
            return Err(E::problem(r.pos, || Problem::TrailingMembers));
        }
        Ok(leader)
    }
}

/// How a reader reports a problem: in full, or (the fast first pass) only that there is one,
/// which keeps every read's result small enough to travel in registers.
trait Report: Sized {
    fn problem(at: usize, problem: impl FnOnce() -> Problem) -> Self;
}

impl Report for BadView {
    fn problem(at: usize, problem: impl FnOnce() -> Problem) -> Self {
        bad(at, problem())
    }
}

/// The fast pass's error.
struct Refused;

impl Report for Refused {
    #[inline]
    fn problem(_: usize, _: impl FnOnce() -> Problem) -> Self {
        Refused
    }
}

/// A group's text, handed out string by string as the shape gives their lengths.
struct Text<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Text<'a> {
    #[inline]
    fn opt<E: Report>(&mut self, r: &mut Reader<'_>) -> Result<Option<&'a str>, E> {
        match r.u32::<E>()? {
            NONE => Ok(None),
            len => self.take(r.pos - 4, len as usize).map(Some),
        }
    }
    #[inline]
    fn required<E: Report>(&mut self, r: &mut Reader<'_>) -> Result<&'a str, E> {
        match r.u32::<E>()? {
            NONE => Err(E::problem(r.pos - 4, || Problem::AbsentString)),
            len => self.take(r.pos - 4, len as usize),
        }
    }
    /// `at`: where the length was read, for the error.
    #[inline]
    fn take<E: Report>(&mut self, at: usize, len: usize) -> Result<&'a str, E> {
        let end = self.pos.saturating_add(len);
        // `get` refuses a range past the end or inside a character.
        match self.text.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(E::problem(at, || Problem::TextSpan(len))),
        }
    }
}

/// The group table's reader reports in full (it runs once per view).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take<E: Report>(&mut self, n: usize) -> Result<&'a [u8], E> {
        match self.bytes.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(E::problem(self.pos, || Problem::Truncated(n))),
        }
    }
    #[inline]
    fn u8<E: Report>(&mut self) -> Result<u8, E> {
        Ok(self.take::<E>(1)?[0])
    }
    #[inline]
    fn bool<E: Report>(&mut self, field: &'static str) -> Result<bool, E> {
        match self.u8::<E>()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(E::problem(self.pos - 1, || Problem::NotBool {
                field,
                value,
            })),
        }
    }
    #[inline]
    fn u32<E: Report>(&mut self) -> Result<u32, E> {
        Ok(u32::from_le_bytes(
            self.take::<E>(4)?.try_into().expect("4 bytes"),
        ))
    }
    #[inline]
    fn i32<E: Report>(&mut self) -> Result<i32, E> {
        Ok(i32::from_le_bytes(
            self.take::<E>(4)?.try_into().expect("4 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::ConnKwargs;

    fn member(name: &str, url: &str) -> Member {
        Member {
            name: name.into(),
            conn_url: Some(url.into()),
            role: Some("replica".into()),
            state: Some("running".into()),
            ..Member::default()
        }
    }

    fn view() -> ClusterView {
        let mut kw = member("k", "");
        kw.conn_url = None;
        kw.conn_kwargs = Some(ConnKwargs {
            host: Some("10.0.0.9".into()),
            port: None,
        });
        kw.noloadbalance = true;
        kw.state = None;
        ClusterView {
            coordinator: GroupView {
                leader: Some("c".into()),
                members: vec![member("c", "postgres://c:5432/x")],
            },
            workers: vec![
                (
                    2,
                    GroupView {
                        leader: None,
                        members: vec![kw],
                    },
                ),
                (
                    1,
                    GroupView {
                        leader: Some("w1".into()),
                        members: vec![member("w1", "postgres://w1:5432/x"), member("ü", "x")],
                    },
                ),
            ],
        }
    }

    fn decoded(bytes: &[u8]) -> Vec<(GroupId, Option<String>, Vec<Member>)> {
        groups(bytes)
            .unwrap()
            .iter()
            .map(|g| {
                let mut ms = Vec::new();
                let leader = g.decode(&mut ms).unwrap();
                let ms = ms
                    .iter()
                    .map(|m| Member {
                        name: m.name.into(),
                        conn_url: m.conn_url.map(Into::into),
                        conn_kwargs: m.conn_kwargs.map(|(h, p)| ConnKwargs {
                            host: h.map(Into::into),
                            port: p.map(Into::into),
                        }),
                        role: m.role.map(Into::into),
                        state: m.state.map(Into::into),
                        noloadbalance: m.noloadbalance,
                    })
                    .collect();
                (g.id, leader.map(Into::into), ms)
            })
            .collect()
    }

    #[test]
    fn a_view_reads_back_as_packed_with_workers_in_id_order() {
        let v = view();
        let got = decoded(&pack_once(&v));
        let ids: Vec<GroupId> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!(got[0].2, v.coordinator.members);
        assert_eq!(got[1].1.as_deref(), Some("w1"));
        assert_eq!(got[1].2, v.workers[1].1.members);
        assert_eq!(got[2].1, None);
        assert_eq!(got[2].2, v.workers[0].1.members);
    }

    #[test]
    fn only_groups_whose_bytes_are_the_same_are_marked_unchanged() {
        let mut p = Packer::new();
        let mut v = view();
        let first = p.pack(&v);
        assert_eq!(first.base, None);
        let s1 = first.seq;
        assert!(groups(first.bytes).unwrap().iter().all(|g| !g.unchanged));
        v.workers[0].1.members[0].state = Some("running".into());
        let second = p.pack(&v);
        assert_eq!(second.base, Some(s1));
        assert!(second.seq > s1);
        let marks: Vec<(GroupId, bool)> = groups(second.bytes)
            .unwrap()
            .iter()
            .map(|g| (g.id, g.unchanged))
            .collect();
        assert_eq!(marks, vec![(0, true), (1, true), (2, false)]);
        // A group that appears is never marked; after a reset nothing is.
        v.workers.push((7, GroupView::default()));
        let third = p.pack(&v);
        let marks: Vec<bool> = groups(third.bytes)
            .unwrap()
            .iter()
            .map(|g| g.unchanged)
            .collect();
        assert_eq!(marks, vec![true, true, true, false]);
        p.reset();
        let fourth = p.pack(&v);
        assert_eq!(fourth.base, None);
        assert!(groups(fourth.bytes).unwrap().iter().all(|g| !g.unchanged));
    }

    #[test]
    fn malformed_views_are_refused_with_the_offset_and_the_problem() {
        let good = pack_once(&view());
        let err = |b: &[u8]| -> String {
            let e = match groups(b) {
                Err(e) => e,
                Ok(gs) => {
                    let mut ms = Vec::new();
                    gs.iter()
                        .find_map(|g| g.decode(&mut ms).err())
                        .expect("refused")
                }
            };
            InvalidInput::from(e).to_string()
        };
        assert_eq!(err(b"CHV2"), "view: byte 0: does not start with \"CHV1\"");
        assert!(err(&good[..good.len() - 1]).contains("runs past the end"));
        let mut extra = good.clone();
        extra.push(0);
        assert!(err(&extra).contains("bytes after the last group"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&huge).contains("claims 4294967295 groups"));
        // The coordinator group's text starts at byte 21 with its leader "c".
        let mut utf = good.clone();
        assert_eq!(utf[21], b'c');
        utf[21] = 0xff;
        assert_eq!(
            err(&utf),
            "view: group 0: byte 21: string is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0"
        );
        // A length that reaches past the group's text.
        let mut span = good.clone();
        let text_len = u32::from_le_bytes(good[17..21].try_into().unwrap()) as usize;
        let leader_len_at = 21 + text_len;
        span[leader_len_at..leader_len_at + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(
            err(&span).contains("a string of 1000 bytes runs past"),
            "{}",
            err(&span)
        );
        let mut order = good.clone();
        let second = 8 + 9 + u32::from_le_bytes(good[13..17].try_into().unwrap()) as usize;
        order[second..second + 4].copy_from_slice(&0i32.to_le_bytes());
        assert!(err(&order).contains("group 0 follows group 0: ids must ascend"));
        let mut flags = good;
        flags[12] = 6;
        assert!(err(&flags).contains("unknown group flags 0x6"));
    }
}
