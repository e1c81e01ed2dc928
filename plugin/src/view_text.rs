//! The DCS view as text (contract 0.4.0's `view`): PostgreSQL's COPY text format, one line per
//! group, with per-group "unchanged since view N" flags.
//!
//! Why text: a host in another language passes a string in one copy, while a byte list or a
//! record per member crosses value by value (wasmtime-py lowers a 240 KB `list<u8>` in 223 ms,
//! the same string in 0.35 ms). Tab-separated fields are also what such a host writes fastest
//! (`"\t".join(...)`), and a steady heartbeat reads no group body at all: it finds each line's
//! end, trusts the `=` flag, and moves on. The layout is documented in
//! `wit/since_v0.4.0/policy.wit`; the writer here is what the Rust host (and the native
//! baseline) use, the reader is what the policy uses.

use crate::dcs::{ClusterView, ConnKwargs, GroupView, Member, MemberRef};
use crate::error::InvalidInput;
use crate::node::{GroupId, COORDINATOR_GROUP};
use std::sync::atomic::{AtomicU64, Ordering};

/// The first field of the first line.
pub const MAGIC: &str = "CHV2";
/// An absent value.
const ABSENT: &str = "\\N";
/// Fields per member.
const MEMBER_FIELDS: usize = 8;

/// Views are numbered from one counter per process, so a `base` never names a view that a
/// different writer produced for the same handler (after a swap or a trap recovery).
static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

// ----- reading ----------------------------------------------------------------------------

/// What is wrong with a text view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextError {
    /// Malformed: refused with the line and the reason.
    Bad { line: usize, reason: String },
    /// A value carries a backslash escape, so it cannot be read in place: the caller reads the
    /// whole view into owned values instead ([`owned_view`]).
    Escaped,
}

impl From<TextError> for InvalidInput {
    fn from(e: TextError) -> Self {
        match e {
            TextError::Bad { line, reason } => {
                InvalidInput::new("view", format!("line {line}: {reason}"))
            }
            TextError::Escaped => InvalidInput::new("view", "an escaped value (a policy bug)"),
        }
    }
}

fn bad(line: usize, reason: impl Into<String>) -> TextError {
    TextError::Bad {
        line,
        reason: reason.into(),
    }
}

/// A text view's header: its `seq` and `base`, and the group lines after it.
#[derive(Clone, Copy, Debug)]
pub struct TextView<'a> {
    pub seq: u64,
    pub base: Option<u64>,
    rest: &'a str,
}

impl<'a> TextView<'a> {
    /// Checks the first line.
    pub fn parse(text: &'a str) -> Result<Self, TextError> {
        let (first, rest) = text
            .split_once('\n')
            .ok_or_else(|| bad(1, "no header line (`CHV2<tab>seq<tab>base`)"))?;
        let mut f = first.split('\t');
        if f.next() != Some(MAGIC) {
            return Err(bad(1, "does not start with \"CHV2\""));
        }
        let seq = f
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad(1, "seq is not an unsigned integer"))?;
        let base = match f.next() {
            Some(ABSENT) => None,
            Some(b) => Some(
                b.parse::<u64>()
                    .map_err(|_| bad(1, "base is neither \\N nor an unsigned integer"))?,
            )
            .filter(|b| *b != 0),
            None => return Err(bad(1, "no base field")),
        };
        if f.next().is_some() {
            return Err(bad(1, "more than three fields"));
        }
        Ok(Self { seq, base, rest })
    }

    /// The group lines, each header checked (ids ascending from the coordinator's 0, a known
    /// flag); bodies are checked when decoded.
    pub fn groups(&self) -> TextGroups<'a> {
        TextGroups {
            rest: self.rest,
            line: 1,
            prev: None,
            failed: false,
        }
    }
}

/// The groups of a text view, one line at a time.
pub struct TextGroups<'a> {
    rest: &'a str,
    line: usize,
    prev: Option<GroupId>,
    failed: bool,
}

/// One group line; its body is decoded only when the policy needs it.
#[derive(Clone, Copy, Debug)]
pub struct TextGroup<'a> {
    pub id: GroupId,
    /// The body is the one it had in view `base`.
    pub unchanged: bool,
    body: &'a str,
    line: usize,
}

impl<'a> Iterator for TextGroups<'a> {
    type Item = Result<TextGroup<'a>, TextError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.rest.is_empty() {
            if self.prev.is_none() {
                self.failed = true;
                return Some(Err(bad(
                    2,
                    "no groups: the coordinator's group comes first",
                )));
            }
            return None;
        }
        self.line += 1;
        let r = self.entry();
        self.failed = r.is_err();
        Some(r)
    }
}

impl<'a> TextGroups<'a> {
    fn entry(&mut self) -> Result<TextGroup<'a>, TextError> {
        let line = self.line;
        // `id \t flag \t length \t body \n`: the length lets a reader skip a body it does not
        // need without looking for its end, and the header is read byte by byte (a steady
        // heartbeat reads nothing else of a group).
        let b = self.rest.as_bytes();
        let tab = |from: usize| {
            b[from.min(b.len())..]
                .iter()
                .position(|&c| c == b'\t')
                .map(|i| i + from)
        };
        let t1 = tab(0).ok_or_else(|| bad(line, "the group id is not an integer"))?;
        let id = self.rest[..t1]
            .parse::<GroupId>()
            .map_err(|_| bad(line, "the group id is not an integer"))?;
        let unchanged = match (b.get(t1 + 1), b.get(t1 + 2)) {
            (Some(b'='), Some(b'\t')) => true,
            (Some(b'+'), Some(b'\t')) => false,
            _ => {
                return Err(bad(
                    line,
                    format!("group {id}: the flag is neither = nor +"),
                ))
            }
        };
        let t3 = tab(t1 + 3)
            .ok_or_else(|| bad(line, format!("group {id}: the body length is not a number")))?;
        let len = self.rest[t1 + 3..t3]
            .parse::<usize>()
            .map_err(|_| bad(line, format!("group {id}: the body length is not a number")))?;
        let rest = &self.rest[t3 + 1..];
        let body = rest
            .get(..len)
            .filter(|_| rest.as_bytes().get(len) == Some(&b'\n'))
            .ok_or_else(|| {
                bad(
                    line,
                    format!("group {id}: the body is not {len} bytes followed by a newline"),
                )
            })?;
        self.rest = &rest[len + 1..];
        match self.prev {
            None if id != COORDINATOR_GROUP => {
                return Err(bad(
                    line,
                    format!("first group is {id}, not the coordinator's 0"),
                ))
            }
            Some(prev) if id <= prev => {
                return Err(bad(
                    line,
                    format!("group {id} follows group {prev}: ids must ascend"),
                ))
            }
            _ => {}
        }
        self.prev = Some(id);
        Ok(TextGroup {
            id,
            unchanged,
            body,
            line,
        })
    }
}

/// A value read in place: absent, or the text itself when it has no escape.
fn value(field: &str) -> Result<Option<&str>, TextError> {
    if field == ABSENT {
        Ok(None)
    } else if field.contains('\\') {
        Err(TextError::Escaped)
    } else {
        Ok(Some(field))
    }
}

impl<'a> TextGroup<'a> {
    /// The body: the leader key, and the members appended to `members` (which the caller
    /// reuses). [`TextError::Escaped`] when a value must be unescaped.
    pub fn decode(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, TextError> {
        let start = members.len();
        let r = self.decode_into(members);
        if r.is_err() {
            members.truncate(start);
        }
        r
    }

    fn decode_into(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, TextError> {
        let mut f = self.body.split('\t');
        let leader = value(f.next().unwrap_or(ABSENT))?;
        while let Some(name) = f.next() {
            let mut field = || {
                f.next().ok_or_else(|| {
                    bad(
                        self.line,
                        format!(
                            "group {}: a member has fewer than {MEMBER_FIELDS} fields",
                            self.id
                        ),
                    )
                })
            };
            let (url, kw, host, port, role, state, nolb) = (
                field()?,
                field()?,
                field()?,
                field()?,
                field()?,
                field()?,
                field()?,
            );
            let name = value(name)?.ok_or_else(|| {
                bad(
                    self.line,
                    format!("group {}: a member has no name", self.id),
                )
            })?;
            let conn_kwargs = match kw {
                "k" => Some((value(host)?, value(port)?)),
                "-" if host == ABSENT && port == ABSENT => None,
                _ => {
                    return Err(bad(
                        self.line,
                        format!("group {}: member {name}: kwargs is neither k nor - (with \\N host and port)", self.id),
                    ))
                }
            };
            let noloadbalance = match nolb {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(bad(
                        self.line,
                        format!(
                            "group {}: member {name}: noloadbalance is not 0 or 1",
                            self.id
                        ),
                    ))
                }
            };
            members.push(MemberRef {
                name,
                conn_url: value(url)?,
                conn_kwargs,
                role: value(role)?,
                state: value(state)?,
                noloadbalance,
            });
        }
        Ok(leader)
    }
}

/// Undoes COPY text escaping.
fn unescape(field: &str, line: usize) -> Result<Option<String>, TextError> {
    if field == ABSENT {
        return Ok(None);
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => {
                return Err(bad(
                    line,
                    format!(
                        "unknown escape \\{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(Some(out))
}

/// The whole view as owned values, escapes undone: for a view with an escaped value (rare:
/// a tab, newline or backslash in a name or URL), which cannot be read in place.
pub fn owned_view(text: &str) -> Result<ClusterView, TextError> {
    let view = TextView::parse(text)?;
    let mut out = ClusterView::default();
    for g in view.groups() {
        let g = g?;
        let mut f = g.body.split('\t');
        let leader = unescape(f.next().unwrap_or(ABSENT), g.line)?;
        let fields: Vec<&str> = f.collect();
        if !fields.len().is_multiple_of(MEMBER_FIELDS) {
            return Err(bad(
                g.line,
                format!(
                    "group {}: a member has fewer than {MEMBER_FIELDS} fields",
                    g.id
                ),
            ));
        }
        let mut members = Vec::with_capacity(fields.len() / MEMBER_FIELDS);
        for m in fields.chunks(MEMBER_FIELDS) {
            let u = |s: &str| unescape(s, g.line);
            let name = u(m[0])?
                .ok_or_else(|| bad(g.line, format!("group {}: a member has no name", g.id)))?;
            let conn_kwargs = match m[2] {
                "k" => Some(ConnKwargs {
                    host: u(m[3])?,
                    port: u(m[4])?,
                }),
                "-" if m[3] == ABSENT && m[4] == ABSENT => None,
                _ => {
                    return Err(bad(
                        g.line,
                        format!("group {}: member {name}: bad kwargs", g.id),
                    ))
                }
            };
            let noloadbalance = match m[7] {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(bad(
                        g.line,
                        format!("group {}: member {name}: noloadbalance is not 0 or 1", g.id),
                    ))
                }
            };
            members.push(Member {
                name,
                conn_url: u(m[1])?,
                conn_kwargs,
                role: u(m[5])?,
                state: u(m[6])?,
                noloadbalance,
            });
        }
        let gv = GroupView { leader, members };
        if g.id == COORDINATOR_GROUP {
            out.coordinator = gv;
        } else {
            out.workers.push((g.id, gv));
        }
    }
    Ok(out)
}

// ----- writing ----------------------------------------------------------------------------

fn push_value(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str(ABSENT),
        Some(s)
            if !s
                .bytes()
                .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) =>
        {
            out.push_str(s)
        }
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// A group's body: everything after the flag.
fn write_body(out: &mut String, g: &GroupView) {
    push_value(out, g.leader.as_deref());
    for m in &g.members {
        out.push('\t');
        push_value(out, Some(&m.name));
        out.push('\t');
        push_value(out, m.conn_url.as_deref());
        match &m.conn_kwargs {
            Some(k) => {
                out.push_str("\tk\t");
                push_value(out, k.host.as_deref());
                out.push('\t');
                push_value(out, k.port.as_deref());
            }
            None => out.push_str("\t-\t\\N\t\\N"),
        }
        out.push('\t');
        push_value(out, m.role.as_deref());
        out.push('\t');
        push_value(out, m.state.as_deref());
        out.push_str(if m.noloadbalance { "\t1" } else { "\t0" });
    }
}

/// The header with fixed-width numbers (base 0: none), so the writer can renumber a view in
/// place.
fn push_header(out: &mut String, seq: u64, base: Option<u64>) {
    use std::fmt::Write;
    let _ = writeln!(out, "{MAGIC}\t{seq:020}\t{:020}", base.unwrap_or(0));
}
const HEADER_LEN: usize = MAGIC.len() + 1 + 20 + 1 + 20 + 1;

/// Writes a group's line; returns where its flag is.
fn push_group(out: &mut String, id: GroupId, unchanged: bool, body: &str) -> usize {
    use std::fmt::Write;
    let _ = write!(out, "{id}\t");
    let flag = out.len();
    let _ = write!(
        out,
        "{}\t{}\t",
        if unchanged { '=' } else { '+' },
        body.len()
    );
    out.push_str(body);
    out.push('\n');
    flag
}

/// The groups in the order the text wants them (coordinator, then workers ascending).
fn ordered(view: &ClusterView) -> Vec<(GroupId, &GroupView)> {
    let mut groups: Vec<(GroupId, &GroupView)> = Vec::with_capacity(view.workers.len() + 1);
    groups.push((COORDINATOR_GROUP, &view.coordinator));
    groups.extend(view.workers.iter().map(|(g, v)| (*g, v)));
    if !groups[1..].windows(2).all(|w| w[0].0 < w[1].0) {
        groups[1..].sort_by_key(|(g, _)| *g);
    }
    groups
}

/// A view written once, with no base (events; tests).
pub fn write_once(view: &ClusterView) -> String {
    let mut out = String::with_capacity(64 + view.workers.len() * 256);
    push_header(&mut out, 0, None);
    let mut body = String::new();
    for (id, g) in ordered(view) {
        body.clear();
        write_body(&mut body, g);
        push_group(&mut out, id, false, &body);
    }
    out
}

/// Writes successive views for one handler, flagging the groups whose body did not change
/// since the previous view.
///
/// It keeps the last view's text. A view whose groups are the same ones, each body byte for
/// byte the same, is written in place: each group is encoded into a scratch buffer and
/// compared, then only the header's numbers and the flags change. Any other view is written
/// anew (flags still relative to the last one).
#[derive(Debug, Default)]
pub struct ViewWriter {
    seq: Option<u64>,
    text: String,
    /// (group id, flag offset, body start, body end) in `text`, in order.
    index: Vec<(GroupId, usize, usize, usize)>,
    body: String,
}

impl ViewWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the previous view: the next one is sent with no base (after the handler behind
    /// this writer was replaced, or a call with the view failed).
    pub fn reset(&mut self) {
        self.seq = None;
    }

    /// The view as text, flagged relative to the previous call's view.
    pub fn write(&mut self, view: &ClusterView) -> &str {
        let base = self.seq;
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let groups = ordered(view);
        if !self.rewrite_in_place(&groups, seq, base) {
            self.write_anew(&groups, seq, base);
        }
        self.seq = Some(seq);
        &self.text
    }

    fn rewrite_in_place(
        &mut self,
        groups: &[(GroupId, &GroupView)],
        seq: u64,
        base: Option<u64>,
    ) -> bool {
        if base.is_none() || self.index.len() != groups.len() {
            return false;
        }
        for (&(id, g), &(pid, _, from, to)) in groups.iter().zip(&self.index) {
            self.body.clear();
            write_body(&mut self.body, g);
            if id != pid || self.text[from..to] != *self.body {
                return false;
            }
        }
        let mut header = String::with_capacity(HEADER_LEN);
        push_header(&mut header, seq, base);
        let mut bytes = std::mem::take(&mut self.text).into_bytes();
        bytes[..HEADER_LEN].copy_from_slice(header.as_bytes());
        for &(_, flag, _, _) in &self.index {
            bytes[flag] = b'=';
        }
        // Only ASCII replaced ASCII, so the text is still UTF-8 (checked, not assumed).
        self.text = String::from_utf8(bytes).expect("ASCII replaced ASCII");
        true
    }

    fn write_anew(&mut self, groups: &[(GroupId, &GroupView)], seq: u64, base: Option<u64>) {
        let mut out = String::with_capacity(self.text.len().max(64));
        let mut index = Vec::with_capacity(groups.len());
        push_header(&mut out, seq, base);
        let mut at_prev = 0;
        for &(id, g) in groups {
            self.body.clear();
            write_body(&mut self.body, g);
            while at_prev < self.index.len() && self.index[at_prev].0 < id {
                at_prev += 1;
            }
            let unchanged = base.is_some()
                && self.index.get(at_prev).is_some_and(|&(pid, _, from, to)| {
                    pid == id && self.text[from..to] == *self.body
                });
            let flag = push_group(&mut out, id, unchanged, &self.body);
            let to = out.len() - 1;
            index.push((id, flag, to - self.body.len(), to));
        }
        self.text = out;
        self.index = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, url: Option<&str>, role: &str) -> Member {
        Member {
            name: name.into(),
            conn_url: url.map(Into::into),
            conn_kwargs: None,
            role: Some(role.into()),
            state: Some("running".into()),
            noloadbalance: false,
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            coordinator: GroupView {
                leader: Some("c1".into()),
                members: vec![member("c1", Some("postgres://10.0.0.1:5432/db"), "primary")],
            },
            workers: vec![
                (
                    2,
                    GroupView {
                        leader: None,
                        members: vec![Member {
                            name: "w2".into(),
                            conn_kwargs: Some(ConnKwargs {
                                host: Some("10.0.2.1".into()),
                                port: None,
                            }),
                            noloadbalance: true,
                            ..Member::default()
                        }],
                    },
                ),
                (
                    1,
                    GroupView {
                        leader: Some("w1".into()),
                        members: vec![
                            member("w1", Some("postgres://10.0.1.1:5432/db"), "primary"),
                            member("w1b", None, "replica"),
                        ],
                    },
                ),
            ],
        }
    }

    fn sorted(mut v: ClusterView) -> ClusterView {
        v.workers.sort_by_key(|(g, _)| *g);
        v
    }

    #[test]
    fn round_trips_through_both_readers() {
        let v = view();
        let text = write_once(&v);
        assert!(
            text.starts_with("CHV2\t00000000000000000000\t00000000000000000000\n0\t+\t"),
            "{text}"
        );
        assert_eq!(owned_view(&text).unwrap(), sorted(v.clone()));
        let tv = TextView::parse(&text).unwrap();
        let mut members = Vec::new();
        let groups: Vec<_> = tv.groups().collect::<Result<_, _>>().unwrap();
        assert_eq!(groups.iter().map(|g| g.id).collect::<Vec<_>>(), [0, 1, 2]);
        let leader = groups[2].decode(&mut members).unwrap();
        assert_eq!(leader, None);
        assert_eq!(members, [sorted(v).workers[1].1.members[0].as_ref()]);
    }

    #[test]
    fn escaped_values_are_read_in_full() {
        let mut v = view();
        v.coordinator.members[0].name = "c\t1\\x\ny".into();
        v.coordinator.leader = Some("c\t1\\x\ny".into());
        let text = write_once(&v);
        let tv = TextView::parse(&text).unwrap();
        let first = tv.groups().next().unwrap().unwrap();
        assert_eq!(first.decode(&mut Vec::new()), Err(TextError::Escaped));
        assert_eq!(owned_view(&text).unwrap(), sorted(v));
    }

    #[test]
    fn the_writer_flags_what_did_not_change() {
        let flags = |t: &str| -> Vec<String> {
            t.lines()
                .skip(1)
                .map(|l| l.split('\t').nth(1).unwrap().to_string())
                .collect()
        };
        let mut w = ViewWriter::new();
        let mut v = view();
        let first = w.write(&v).to_string();
        assert_eq!(flags(&first), ["+", "+", "+"]);
        let same = w.write(&v).to_string();
        assert_eq!(flags(&same), ["=", "=", "="]);
        assert_eq!(same.len(), first.len(), "rewritten in place");
        v.workers[0].1.members[0].state = Some("stopped".into());
        let second = w.write(&v).to_string();
        assert_eq!(flags(&second), ["=", "=", "+"]);
        let header = TextView::parse(&second).unwrap();
        assert_eq!(header.base, TextView::parse(&same).ok().map(|h| h.seq));
        assert_eq!(owned_view(&second).unwrap(), sorted(v.clone()));
        w.reset();
        assert!(TextView::parse(w.write(&v)).unwrap().base.is_none());
    }

    #[test]
    fn malformed_views_name_the_line() {
        let cases = [
            ("", "line 1: no header"),
            ("CHV1\t1\t\\N\n", "line 1: does not start"),
            ("CHV2\t1\t\\N\n", "line 2: no groups"),
            ("CHV2\t1\t\\N\n1\t+\t2\t\\N\n", "line 2: first group is 1"),
            ("CHV2\t1\t\\N\n0\t?\t2\t\\N\n", "line 2: group 0: the flag"),
            (
                "CHV2\t1\t\\N\n0\t+\tx\t\\N\n",
                "line 2: group 0: the body length",
            ),
            (
                "CHV2\t1\t\\N\n0\t+\t2\t\\N\n0\t+\t2\t\\N\n",
                "line 3: group 0 follows group 0",
            ),
            (
                "CHV2\t1\t\\N\n0\t+\t2\t\\N",
                "line 2: group 0: the body is not 2 bytes",
            ),
            (
                "CHV2\t1\t\\N\n0\t+\t3\t\\N\n",
                "line 2: group 0: the body is not 3 bytes",
            ),
            (
                "CHV2\t1\t\\N\n0\t+\t6\tc\tc\t\\N\n",
                "line 2: group 0: a member has fewer",
            ),
            (
                "CHV2\t1\t\\N\n0\t+\t22\tc\tc\t\\N\t-\t\\N\t\\N\t\\N\t\\N\t2\n",
                "line 2: group 0: member c: noloadbalance",
            ),
        ];
        for (text, want) in cases {
            let got = TextView::parse(text).and_then(|v| {
                let mut m = Vec::new();
                for g in v.groups() {
                    g?.decode(&mut m)?;
                }
                Ok(())
            });
            let e = InvalidInput::from(got.unwrap_err());
            assert_eq!(e.field, "view");
            assert!(e.reason.starts_with(want), "{text:?}: {}", e.reason);
        }
    }
}
