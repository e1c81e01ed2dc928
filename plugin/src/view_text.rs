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
    #[inline(always)]
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
        // Plain digits are read in the same pass that finds the tab; anything else (a sign,
        // leading spaces, too many digits) goes the way `str::parse` reads it.
        let (id, t1) =
            match plain_number(b, 0).and_then(|(n, t)| Some((GroupId::try_from(n).ok()?, t))) {
                Some(found) => found,
                None => {
                    let t1 = tab(0).ok_or_else(|| bad(line, "the group id is not an integer"))?;
                    let id = self.rest[..t1]
                        .parse::<GroupId>()
                        .map_err(|_| bad(line, "the group id is not an integer"))?;
                    (id, t1)
                }
            };
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
        let (len, t3) =
            match plain_number(b, t1 + 3).and_then(|(n, t)| Some((usize::try_from(n).ok()?, t))) {
                Some(found) => found,
                None => {
                    let no_length =
                        || bad(line, format!("group {id}: the body length is not a number"));
                    let t3 = tab(t1 + 3).ok_or_else(no_length)?;
                    let len = self.rest[t1 + 3..t3]
                        .parse::<usize>()
                        .map_err(|_| no_length())?;
                    (len, t3)
                }
            };
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

/// The run of 1 to 18 decimal digits at `from` that a tab ends: its value and the tab's
/// position. None for anything else, which the caller reads with `str::parse` instead (and
/// which names what is wrong): a steady heartbeat reads every group's id and length, and
/// this is the one pass over them it needs.
#[inline(always)]
fn plain_number(b: &[u8], from: usize) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    for (i, &c) in b.get(from..)?.iter().enumerate().take(19) {
        match c {
            b'0'..=b'9' => n = n * 10 + u64::from(c - b'0'),
            b'\t' if i > 0 => return Some((n, from + i)),
            _ => return None,
        }
    }
    None
}

/// A value read in place: absent, or the text itself ([`cut_fields`] notes one that needs
/// unescaping, and the group is then refused as [`TextError::Escaped`]).
fn value(field: &str) -> Option<&str> {
    (field != ABSENT).then_some(field)
}

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The bytes of `w` equal to `byte`, as 0x80 in each such byte and 0 in every other (exact,
/// unlike the shorter zero-byte test, whose borrow can mark the byte after a match).
#[inline(always)]
fn byte_mask(w: u64, byte: u8) -> u64 {
    let x = w ^ (0x0101_0101_0101_0101 * u64::from(byte));
    !((x & LO7).wrapping_add(LO7) | x | LO7)
}

/// The eight bytes of `b` at `at`, zero past its end (a zero byte is neither tab nor
/// backslash). A short last word is the slice's last eight bytes shifted down, so no byte is
/// copied one at a time unless the whole slice is shorter than a word.
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> u64 {
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("eight bytes"));
    if let Some(w) = b.get(at..at + 8) {
        return word(w);
    }
    let rest = b.len().saturating_sub(at);
    match b.len().checked_sub(8) {
        _ if rest == 0 => 0,
        Some(last) => word(&b[last..]) >> (8 * (8 - rest)),
        None => b[at..]
            .iter()
            .rev()
            .fold(0, |w, &c| (w << 8) | u64::from(c)),
    }
}

/// Fields of a body read without allocating: the leader's and eight members'.
const FAST_FIELDS: usize = 1 + 8 * MEMBER_FIELDS;

/// Where a body's field ends go: an array on the stack for the bodies a heartbeat reads, a
/// vector for a group of more than eight members.
trait Cuts {
    /// Stores `end` as field `n`'s end (fields come in order); false when there is no room.
    fn put(&mut self, n: usize, end: u32) -> bool;
}

impl Cuts for [u32; FAST_FIELDS] {
    #[inline(always)]
    fn put(&mut self, n: usize, end: u32) -> bool {
        match self.get_mut(n) {
            Some(slot) => {
                *slot = end;
                true
            }
            None => false,
        }
    }
}

impl Cuts for Vec<u32> {
    fn put(&mut self, n: usize, end: u32) -> bool {
        debug_assert_eq!(n, self.len(), "fields come in order");
        self.push(end);
        true
    }
}

/// Where each tab-separated field of `body` ends (what `str::split('\t')` finds) and whether
/// one needs unescaping (a backslash other than a whole `\N`), in one loop over its chunks
/// with nothing kept between chunks but the count: the guest's profile of an all-new
/// heartbeat has this as its largest part. The number of fields, or None when `cuts` has no
/// room for them all (or the body is over 4 GiB).
#[inline(always)]
fn cut_fields(body: &str, cuts: &mut impl Cuts) -> Option<(usize, bool)> {
    let b = body.as_bytes();
    let len = u32::try_from(b.len()).ok()?;
    let (mut n, mut escaped, mut at) = (0, false, 0);
    while at < b.len() {
        let (mut tabs, mut slashes) = chunk::masks(b, at);
        while tabs != 0 {
            if !cuts.put(n, (at + tabs.trailing_zeros() as usize) as u32) {
                return None;
            }
            n += 1;
            tabs &= tabs - 1;
        }
        while slashes != 0 {
            escaped |= !is_whole_absent(b, at + slashes.trailing_zeros() as usize);
            slashes &= slashes - 1;
        }
        at += chunk::WIDTH;
    }
    cuts.put(n, len).then_some((n + 1, escaped))
}

/// The fields of `body` that end at `ends` ([`cut_fields`]).
fn fields_at<'a, 'e>(body: &'a str, ends: &'e [u32]) -> impl Iterator<Item = &'a str> + 'e
where
    'a: 'e,
{
    let mut from = 0;
    ends.iter().map(move |&end| {
        // A tab is ASCII, so both ends are char boundaries.
        let field = &body[from..end as usize];
        from = end as usize + 1;
        field
    })
}

/// The tabs and backslashes among the `WIDTH` bytes of a body at `at` (those that are left
/// at its end), one bit per byte. In the component, sixteen bytes at a time with Wasm's
/// SIMD (every host that runs the component compiles it: wasmtime, wasmtime-py, Node).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod chunk {
    use core::arch::wasm32::{i8x16_bitmask, u8x16_eq, u8x16_splat, v128, v128_load};

    pub const WIDTH: usize = 16;

    #[inline(always)]
    pub fn masks(b: &[u8], at: usize) -> (u32, u32) {
        let (from, shift) = match b.len() - at {
            rest if rest >= WIDTH => (at, 0),
            // The last sixteen bytes, and the bits of those already read shifted out.
            rest if b.len() >= WIDTH => (b.len() - WIDTH, WIDTH - rest),
            _ => return super::chunk_words(b, at),
        };
        let c = &b[from..from + WIDTH];
        // SAFETY: `c` is sixteen readable bytes; a Wasm load has no alignment requirement.
        let v = unsafe { v128_load(c.as_ptr().cast::<v128>()) };
        let tabs = u32::from(i8x16_bitmask(u8x16_eq(v, u8x16_splat(b'\t'))));
        let slashes = u32::from(i8x16_bitmask(u8x16_eq(v, u8x16_splat(b'\\'))));
        (tabs >> shift, slashes >> shift)
    }
}

/// Natively (tests, the native baseline), two words at a time.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod chunk {
    pub const WIDTH: usize = 16;

    #[inline(always)]
    pub fn masks(b: &[u8], at: usize) -> (u32, u32) {
        super::chunk_words(b, at)
    }
}

/// The tabs and backslashes of the sixteen bytes at `at` (zero past the end), one bit per
/// byte, read as two words.
#[inline(always)]
fn chunk_words(b: &[u8], at: usize) -> (u32, u32) {
    // 0x80 per matching byte, gathered into the low byte.
    let bits = |m: u64| ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32;
    let lo = word_at(b, at);
    let hi = word_at(b, at + 8);
    (
        bits(byte_mask(lo, b'\t')) | bits(byte_mask(hi, b'\t')) << 8,
        bits(byte_mask(lo, b'\\')) | bits(byte_mask(hi, b'\\')) << 8,
    )
}

/// Whether the backslash at `p` is a whole `\N` field (an absent value, not an escape).
#[inline(always)]
fn is_whole_absent(b: &[u8], p: usize) -> bool {
    (p == 0 || b[p - 1] == b'\t')
        && b.get(p + 1) == Some(&b'N')
        && b.get(p + 2).is_none_or(|&c| c == b'\t')
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
        let mut cuts = [0u32; FAST_FIELDS];
        let (leader, escaped) = match cut_fields(self.body, &mut cuts) {
            Some((n, escaped)) => (
                self.members_from(fields_at(self.body, &cuts[..n]), members)?,
                escaped,
            ),
            None => {
                let mut long = Vec::new();
                let (_, escaped) = cut_fields(self.body, &mut long).ok_or_else(|| {
                    bad(
                        self.line,
                        format!("group {}: the body is over 4 GiB", self.id),
                    )
                })?;
                (
                    self.members_from(fields_at(self.body, &long), members)?,
                    escaped,
                )
            }
        };
        if escaped {
            return Err(TextError::Escaped);
        }
        Ok(leader)
    }

    /// The leader key, and the members appended to `members`, read from a body's fields.
    fn members_from(
        &self,
        mut f: impl Iterator<Item = &'a str>,
        members: &mut Vec<MemberRef<'a>>,
    ) -> Result<Option<&'a str>, TextError> {
        let leader = value(f.next().unwrap_or(ABSENT));
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
            let name = value(name).ok_or_else(|| {
                bad(
                    self.line,
                    format!("group {}: a member has no name", self.id),
                )
            })?;
            let conn_kwargs = match kw {
                "k" => Some((value(host), value(port))),
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
                conn_url: value(url),
                conn_kwargs,
                role: value(role),
                state: value(state),
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

/// Appends a value; returns whether it had to be escaped.
fn push_value(out: &mut String, v: Option<&str>) -> bool {
    match v {
        None => {
            out.push_str(ABSENT);
            false
        }
        Some(s) if !needs_escape(s) => {
            out.push_str(s);
            false
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
            true
        }
    }
}

/// Whether `s` holds a byte COPY text escapes (backslash, tab, newline, carriage return),
/// a word at a time: the host writes every value of an all-new view through this, and most
/// values are shorter than a word. A short value is read as overlapping pieces (a byte seen
/// twice does not change whether one is special), the way `memchr` reads short haystacks.
fn needs_escape(s: &str) -> bool {
    let special = |w: u64| {
        byte_mask(w, b'\\') | byte_mask(w, b'\t') | byte_mask(w, b'\n') | byte_mask(w, b'\r') != 0
    };
    let b = s.as_bytes();
    let n = b.len();
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("four")));
    match n {
        0 => false,
        1..=3 => special(u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16),
        4..=7 => special(u32_at(0) | u32_at(n - 4) << 32),
        _ => {
            b.chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().expect("eight bytes")))
                .any(special)
                || special(word_at(b, n - 8))
        }
    }
}

/// One piece of a body as it is laid out: a separator or fixed token, or a value.
enum Piece<'a> {
    Token(&'static str),
    Value(Option<&'a str>),
}

/// A group's body (everything after the flag) as pieces in order: the one place that says
/// the layout, for the writer, the length pass and the in-place comparison. Stops at the
/// first piece `f` answers false to, and says whether it went through.
fn body_pieces<'a>(g: &'a GroupView, mut f: impl FnMut(Piece<'a>) -> bool) -> bool {
    use Piece::{Token, Value};
    if !f(Value(g.leader.as_deref())) {
        return false;
    }
    g.members.iter().all(|m| {
        f(Token("\t"))
            && f(Value(Some(&m.name)))
            && f(Token("\t"))
            && f(Value(m.conn_url.as_deref()))
            && match &m.conn_kwargs {
                Some(k) => {
                    f(Token("\tk\t"))
                        && f(Value(k.host.as_deref()))
                        && f(Token("\t"))
                        && f(Value(k.port.as_deref()))
                }
                None => f(Token("\t-\t\\N\t\\N")),
            }
            && f(Token("\t"))
            && f(Value(m.role.as_deref()))
            && f(Token("\t"))
            && f(Value(m.state.as_deref()))
            && f(Token(if m.noloadbalance { "\t1" } else { "\t0" }))
    })
}

/// Writes a group's body. Returns whether any value was escaped.
fn write_body(out: &mut String, g: &GroupView) -> bool {
    let mut escaped = false;
    body_pieces(g, |p| {
        match p {
            Piece::Token(t) => out.push_str(t),
            Piece::Value(v) => escaped |= push_value(out, v),
        }
        true
    });
    escaped
}

/// The length of a group's body when no value in it needs escaping (then the body can be
/// written straight after its header, not into a scratch buffer first).
fn plain_body_len(g: &GroupView) -> Option<usize> {
    let mut len = 0;
    body_pieces(g, |p| {
        len += match p {
            Piece::Token(t) => t.len(),
            Piece::Value(None) => ABSENT.len(),
            Piece::Value(Some(v)) if needs_escape(v) => return false,
            Piece::Value(Some(v)) => v.len(),
        };
        true
    })
    .then_some(len)
}

/// Writes a new group's line (see [`plain_body_len`]); says whether a value was escaped.
fn push_new_group(
    out: &mut String,
    scratch: &mut String,
    id: GroupId,
    g: &GroupView,
) -> (Line, bool) {
    let Some(len) = plain_body_len(g) else {
        scratch.clear();
        write_body(scratch, g);
        return (push_group(out, id, false, scratch), true);
    };
    let line = push_group_header(out, id, false, len);
    body_pieces(g, |p| {
        out.push_str(match p {
            Piece::Token(t) => t,
            Piece::Value(v) => v.unwrap_or(ABSENT),
        });
        true
    });
    debug_assert_eq!(
        out.len() - line.body,
        len,
        "plain_body_len and the writer agree"
    );
    out.push('\n');
    (line, false)
}

/// Whether `write_body(g)` would write exactly `body`, found without writing it: each value
/// is compared where it stands in `body`. Only for a body written with no escaped value and
/// with as many members as `g`, which makes a plain comparison exact: such a body has no tab
/// but its separators, so a value with a tab in it cannot line up with the fields, nor one with
/// a newline, carriage return or backslash (none in such a body but the whole-field `\N`,
/// which a present value never matches).
fn plain_body_is(body: &str, g: &GroupView) -> bool {
    let mut c = Cursor(body.as_bytes());
    body_pieces(g, |p| match p {
        Piece::Token(t) => c.token(t.as_bytes()),
        Piece::Value(v) => c.value(v),
    }) && c.0.is_empty()
}

/// What is left of a body being compared.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn token(&mut self, t: &[u8]) -> bool {
        match self.0.strip_prefix(t) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }
    fn value(&mut self, v: Option<&str>) -> bool {
        match v {
            None => self.token(ABSENT.as_bytes()),
            Some(s) => s != ABSENT && self.token(s.as_bytes()),
        }
    }
}

/// The header with fixed-width numbers (base 0: none), so the writer can renumber a view in
/// place.
fn push_header(out: &mut String, seq: u64, base: Option<u64>) {
    use std::fmt::Write;
    let _ = writeln!(out, "{MAGIC}\t{seq:020}\t{:020}", base.unwrap_or(0));
}
const HEADER_LEN: usize = MAGIC.len() + 1 + 20 + 1 + 20 + 1;

/// Where a group's line was written: its flag, and the start of its body.
#[derive(Clone, Copy)]
struct Line {
    flag: usize,
    body: usize,
}

/// Writes a group line's `id \t flag \t length \t`.
fn push_group_header(out: &mut String, id: GroupId, unchanged: bool, len: usize) -> Line {
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(id));
    out.push('\t');
    let flag = out.len();
    out.push_str(if unchanged { "=\t" } else { "+\t" });
    out.push_str(n.format(len));
    out.push('\t');
    Line {
        flag,
        body: out.len(),
    }
}

/// Writes a group's line.
fn push_group(out: &mut String, id: GroupId, unchanged: bool, body: &str) -> Line {
    let line = push_group_header(out, id, unchanged, body.len());
    out.push_str(body);
    out.push('\n');
    line
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
    let mut scratch = String::new();
    for (id, g) in ordered(view) {
        push_new_group(&mut out, &mut scratch, id, g);
    }
    out
}

/// Writes successive views for one handler, flagging the groups whose body did not change
/// since the previous view.
///
/// It keeps the last view's text and, per group, where its body is, how many members it has
/// and whether a value in it was escaped. A group is compared with its previous body in
/// place, value by value, without being written (see [`plain_body_is`]; a body with an escaped
/// value is written into a scratch buffer and compared). When every group is unchanged, only
/// the header's numbers and the flags change; otherwise the view is written anew, an
/// unchanged body copied from the previous text.
#[derive(Debug, Default)]
pub struct ViewWriter {
    seq: Option<u64>,
    text: String,
    /// Each group of `text`, in order.
    index: Vec<Written>,
    body: String,
}

/// Where a group is in the writer's text, and what the in-place comparison needs to know.
#[derive(Clone, Copy, Debug)]
struct Written {
    id: GroupId,
    /// Offset of its flag.
    flag: usize,
    /// Its body's range.
    from: usize,
    to: usize,
    members: usize,
    /// A value in the body was escaped: compare by writing.
    escaped: bool,
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

    /// Whether group `g` is what `w` says the previous text has.
    fn unchanged(text: &str, body: &mut String, w: &Written, g: &GroupView) -> bool {
        let prev = &text[w.from..w.to];
        if w.members != g.members.len() {
            return false;
        }
        if !w.escaped {
            return plain_body_is(prev, g);
        }
        body.clear();
        write_body(body, g);
        prev == body.as_str()
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
        for (&(id, g), w) in groups.iter().zip(&self.index) {
            if id != w.id || !Self::unchanged(&self.text, &mut self.body, w, g) {
                return false;
            }
        }
        let mut header = String::with_capacity(HEADER_LEN);
        push_header(&mut header, seq, base);
        // Equal-length ASCII over ASCII: nothing moves and the text stays UTF-8.
        self.text.replace_range(..HEADER_LEN, &header);
        for w in &self.index {
            if self.text.as_bytes()[w.flag] != b'=' {
                self.text.replace_range(w.flag..w.flag + 1, "=");
            }
        }
        true
    }

    fn write_anew(&mut self, groups: &[(GroupId, &GroupView)], seq: u64, base: Option<u64>) {
        let mut out = String::with_capacity(self.text.len().max(64));
        let mut index = Vec::with_capacity(groups.len());
        push_header(&mut out, seq, base);
        let mut at_prev = 0;
        for &(id, g) in groups {
            while at_prev < self.index.len() && self.index[at_prev].id < id {
                at_prev += 1;
            }
            let prev = self.index.get(at_prev).filter(|w| w.id == id);
            let same = prev.filter(|w| Self::unchanged(&self.text, &mut self.body, w, g));
            let (line, escaped) = match same {
                Some(w) => {
                    let body = &self.text[w.from..w.to];
                    (push_group(&mut out, id, base.is_some(), body), w.escaped)
                }
                None => push_new_group(&mut out, &mut self.body, id, g),
            };
            index.push(Written {
                id,
                flag: line.flag,
                from: line.body,
                to: out.len() - 1,
                members: g.members.len(),
                escaped,
            });
        }
        self.text = out;
        self.index = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// The field loop skips eight bytes at a time: a backslash (or an escaped tab) at any
    /// offset of a long value is still seen, and a whole `\N` still reads as absent.
    #[test]
    fn escapes_are_found_at_every_offset_of_a_long_value() {
        for at in 0..20 {
            for special in ["\\", "\t", "\n"] {
                let mut url = "postgres://host-name-of-some-length:5432/".to_string();
                url.insert_str(at, special);
                let mut v = view();
                v.coordinator.members[0].conn_url = Some(url);
                let text = write_once(&v);
                let tv = TextView::parse(&text).unwrap();
                let first = tv.groups().next().unwrap().unwrap();
                assert_eq!(
                    first.decode(&mut Vec::new()),
                    Err(TextError::Escaped),
                    "{special:?} at {at}"
                );
                assert_eq!(owned_view(&text).unwrap(), sorted(v));
            }
        }
        let mut v = view();
        v.coordinator.members[0].conn_url = None;
        v.coordinator.members[0].name = "a-name-longer-than-a-word".into();
        let text = write_once(&v);
        let tv = TextView::parse(&text).unwrap();
        let mut members = Vec::new();
        tv.groups()
            .next()
            .unwrap()
            .unwrap()
            .decode(&mut members)
            .unwrap();
        assert_eq!(members[0].name, "a-name-longer-than-a-word");
        assert_eq!(members[0].conn_url, None);
    }

    proptest! {
        /// The word-at-a-time readers agree with the obvious byte-at-a-time definitions, at
        /// every offset and length (bodies are built from the bytes that matter to them).
        #[test]
        fn fields_are_what_split_finds(body in "[a\\\\\tNé]{0,120}") {
            let expected: Vec<&str> = body.split('\t').collect();
            let escaped = expected.iter().any(|v| v.contains('\\') && *v != ABSENT);
            let mut long = Vec::new();
            let (n, long_escaped) = cut_fields(&body, &mut long).unwrap();
            prop_assert_eq!(n, long.len());
            prop_assert_eq!(&fields_at(&body, &long).collect::<Vec<_>>(), &expected);
            prop_assert_eq!(long_escaped, escaped);
            let mut cuts = [0u32; FAST_FIELDS];
            match cut_fields(&body, &mut cuts) {
                Some((n, cut_escaped)) => {
                    prop_assert_eq!(&fields_at(&body, &cuts[..n]).collect::<Vec<_>>(), &expected);
                    prop_assert_eq!(cut_escaped, escaped);
                }
                None => prop_assert!(expected.len() > FAST_FIELDS),
            }
        }

        #[test]
        fn escapes_are_found_where_they_are(value in "[ab\\\\\t\n\ré]{0,40}") {
            let expected = value.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'));
            prop_assert_eq!(needs_escape(&value), expected);
        }

        #[test]
        fn plain_numbers_are_what_parse_reads(head in "[0-9+ a-]{0,22}", tail in "[\t0-9]{0,3}") {
            let text = format!("{head}{tail}");
            if let Some((n, tab)) = plain_number(text.as_bytes(), 0) {
                prop_assert_eq!(text.as_bytes()[tab], b'\t');
                prop_assert_eq!(text[..tab].parse::<u64>().ok(), Some(n));
            }
        }
    }

    fn tricky_value() -> impl Strategy<Value = Option<String>> {
        prop::option::of(
            prop::collection::vec(
                prop::sample::select(vec!["a", "\\", "N", "\t", "\n", "\r", "k", "-", "0"]),
                0..4,
            )
            .prop_map(|v| v.concat()),
        )
    }

    fn tricky_group() -> impl Strategy<Value = GroupView> {
        let member = (
            tricky_value(),
            tricky_value(),
            prop::option::of((tricky_value(), tricky_value())),
            tricky_value(),
            tricky_value(),
            any::<bool>(),
        )
            .prop_map(|(name, conn_url, kw, role, state, noloadbalance)| Member {
                name: name.unwrap_or_default(),
                conn_url,
                conn_kwargs: kw.map(|(host, port)| ConnKwargs { host, port }),
                role,
                state,
                noloadbalance,
            });
        (tricky_value(), prop::collection::vec(member, 0..3))
            .prop_map(|(leader, members)| GroupView { leader, members })
    }

    proptest! {
        /// A group is flagged unchanged exactly when its body is byte for byte the previous
        /// one, whatever its values hold (tabs, backslashes, a literal `\N`), and the text reads
        /// back as the view.
        #[test]
        fn the_writer_flags_exactly_the_unchanged_bodies(
            first in prop::collection::vec(tricky_group(), 1..4),
            second in prop::collection::vec(tricky_group(), 1..4),
            keep in prop::collection::vec(any::<bool>(), 4),
        ) {
            let cluster = |groups: Vec<GroupView>| {
                let mut groups = groups.into_iter();
                ClusterView {
                    coordinator: groups.next().expect("one group"),
                    workers: groups.enumerate().map(|(i, g)| (i as GroupId + 1, g)).collect(),
                }
            };
            // The second view keeps some of the first's groups as they were.
            let mixed: Vec<GroupView> = second
                .into_iter()
                .enumerate()
                .map(|(i, g)| match first.get(i) {
                    Some(f) if keep[i] => f.clone(),
                    _ => g,
                })
                .collect();
            let (a, b) = (cluster(first), cluster(mixed));
            let mut w = ViewWriter::new();
            w.write(&a);
            let text = w.write(&b).to_string();
            prop_assert_eq!(owned_view(&text).unwrap(), sorted(b.clone()));
            let body = |v: &ClusterView, id: GroupId| {
                ordered(v).into_iter().find(|(g, _)| *g == id).map(|(_, g)| {
                    let mut s = String::new();
                    write_body(&mut s, g);
                    s
                })
            };
            for line in text.lines().skip(1) {
                let mut f = line.split('\t');
                let id: GroupId = f.next().unwrap().parse().unwrap();
                let flag = f.next().unwrap();
                let same = body(&a, id) == body(&b, id);
                prop_assert_eq!(flag == "=", same, "group {}: {:?}", id, line);
            }
        }
    }

    /// The in-place comparison's two traps: a value whose raw text is another field's text
    /// (a literal `\N`, or tabs that line up with the next member's fields).
    #[test]
    fn values_that_line_up_with_other_fields_are_changes() {
        let two = view();
        let g = &two.workers[1].1;
        assert_eq!(g.members.len(), 2, "the fixture's group 2");
        let mut body = String::new();
        write_body(&mut body, g);
        // One member whose state holds the rest of the body, tabs and all.
        let first = &g.members[0];
        let mut b1 = String::new();
        write_body(
            &mut b1,
            &GroupView {
                leader: g.leader.clone(),
                members: vec![first.clone()],
            },
        );
        let rest = &body[b1.len()..];
        let state = format!(
            "{}{}{}",
            first.state.as_deref().unwrap(),
            &b1[b1.len() - 2..],
            &rest[..rest.len() - 2]
        );
        let mut one = g.clone();
        one.members = vec![Member {
            state: Some(state),
            noloadbalance: rest.ends_with('1'),
            ..first.clone()
        }];
        assert!(plain_body_is(&body, &one), "the raw text lines up");
        let mut crafted = two.clone();
        crafted.workers[1].1 = one;
        let mut literal = two.clone();
        literal.workers[1].1.leader = None;
        let mut prev = two.clone();
        prev.workers[1].1.leader = None;
        literal.workers[1].1.members[0].conn_url = Some("\\N".into());
        prev.workers[1].1.members[0].conn_url = None;
        for (before, after) in [(&two, &crafted), (&prev, &literal)] {
            let mut w = ViewWriter::new();
            w.write(before);
            let text = w.write(after).to_string();
            let flags: Vec<&str> = text
                .lines()
                .skip(1)
                .map(|l| l.split('\t').nth(1).unwrap())
                .collect();
            assert_eq!(flags, ["=", "+", "="], "{text}");
            assert_eq!(owned_view(&text).unwrap(), sorted(after.clone()));
        }
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
