//! Pending work: at most one task per group, kept in arrival order.

use crate::event::{EventKind, DEFAULT_COOLDOWN_MS};
use crate::group::Group;
use crate::node::GroupId;
use crate::time::{Duration, Instant};
use std::collections::{BTreeMap, VecDeque};

/// A host-visible handle for a worker event whose task someone waits for.
pub type Ticket = u64;

/// A task's identity, given when it is queued: a task replaced while being processed must
/// not be popped afterwards.
pub type TaskId = u64;

/// Who asked for a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The heartbeat: make pg_dist_node match the DCS as it stands. Nobody waits for it.
    Heartbeat,
    /// A worker's event, whose caller waits (with its ticket) at most `timeout`.
    Event(Caller),
}

/// The caller of a worker event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// What the host completes when the task is done or dropped. Every event task has one;
    /// the `Option` keeps a state whose task has none (never written by a released build)
    /// importable as it is.
    pub ticket: Option<Ticket>,
    /// How long its pause (the open transaction) may last.
    pub timeout: Duration,
    /// When the pause must end: on arrival, arrival + timeout, the moment the caller stops
    /// waiting (a task still queued then is dropped, never started). `None` until then under
    /// the reference's rules (and in a state from a build that set it only on start): then
    /// it is start + timeout.
    pub deadline: Option<Instant>,
}

/// What a heartbeat or an event wants for a group, before the queue takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub group: Group,
    pub event: EventKind,
    pub origin: Origin,
    /// What Citus waits before terminating sessions that block a forced update (ms).
    pub cooldown_ms: i32,
}

impl Wanted {
    /// What the heartbeat wants for a group: its topology as the DCS shows it, committed.
    pub fn from_heartbeat(group: Group) -> Self {
        Wanted {
            group,
            event: EventKind::AfterPromote,
            origin: Origin::Heartbeat,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
        }
    }
    /// The reference's task equality: same event and same topology.
    pub fn same_as(&self, queued: &Task) -> bool {
        self.event == queued.event && self.group.same_topology(&queued.group)
    }
    /// Whether this is what the cache already holds for the group (a committed topology is
    /// what a heartbeat's `after_promote` wants).
    pub fn is_committed(&self, cached: &Group) -> bool {
        self.event == EventKind::AfterPromote && self.group.same_topology(cached)
    }
    pub fn queued(self, id: TaskId) -> Task {
        Task {
            id,
            group: self.group,
            event: self.event,
            origin: self.origin,
            cooldown_ms: self.cooldown_ms,
            not_before: None,
        }
    }
}

/// The desired state of one group and why it is wanted, as queued.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub group: Group,
    pub event: EventKind,
    pub origin: Origin,
    pub cooldown_ms: i32,
    /// Not to be picked before this time (Citus asked to wait for metadata sync).
    pub not_before: Option<Instant>,
}

impl Task {
    pub fn groupid(&self) -> GroupId {
        self.group.groupid
    }
    /// See [`Wanted::is_committed`].
    pub fn is_committed(&self, cached: &Group) -> bool {
        self.event == EventKind::AfterPromote && self.group.same_topology(cached)
    }
    pub fn caller(&self) -> Option<&Caller> {
        match &self.origin {
            Origin::Event(c) => Some(c),
            Origin::Heartbeat => None,
        }
    }
    pub fn ticket(&self) -> Option<Ticket> {
        self.caller().and_then(|c| c.ticket)
    }
    pub fn deadline(&self) -> Option<Instant> {
        self.caller().and_then(|c| c.deadline)
    }
    /// For a queued task that would open a pause: the moment its caller stopped waiting, if
    /// known. Past it the pause serves nobody. (A promotion's task still applies late: the
    /// worker has promoted, and its row must follow.)
    pub fn expires_at(&self) -> Option<Instant> {
        self.deadline().filter(|_| self.event.opens_transaction())
    }
    pub fn from_event(&self) -> bool {
        matches!(self.origin, Origin::Event(_))
    }
}

/// Tasks by group with their arrival order. Replacing a group's task keeps its place in line.
#[derive(Clone, Debug, Default)]
pub struct TaskQueue {
    /// Tasks by group, in two parts: the tree, and a tail of tasks pushed for groups above
    /// every group in it, in ascending order. A heartbeat that finds many groups new pushes
    /// their tasks in ascending group order, so they land in the tail one append each; the
    /// tail goes into the tree on the next change other than a push (in one bulk build when it
    /// is large), not one tree insert per task.
    by_group: BTreeMap<GroupId, (u64, Task)>,
    tail: Vec<(GroupId, u64, Task)>,
    /// (arrival number, group), oldest first. An entry whose number is no longer its group's
    /// (the task was removed) is dropped lazily: pushing is one append, not a second tree
    /// insert.
    order: VecDeque<(u64, GroupId)>,
    next_seq: u64,
}

impl TaskQueue {
    pub fn len(&self) -> usize {
        self.by_group.len() + self.tail.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_group.is_empty() && self.tail.is_empty()
    }
    pub fn get(&self, group: GroupId) -> Option<&Task> {
        self.entry(group).map(|(_, t)| t)
    }
    pub fn get_mut(&mut self, group: GroupId) -> Option<&mut Task> {
        match self.in_tail(group) {
            Some(Ok(i)) => Some(&mut self.tail[i].2),
            Some(Err(_)) => None,
            None => self.by_group.get_mut(&group).map(|(_, t)| t),
        }
    }
    /// Appends a task for a group that has none queued.
    pub fn push(&mut self, task: Task) {
        let g = task.groupid();
        debug_assert!(self.get(g).is_none());
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, g));
        let above_all = match self.tail.last() {
            Some(&(last, _, _)) => last < g,
            None => self
                .by_group
                .last_key_value()
                .is_none_or(|(&last, _)| last < g),
        };
        if above_all {
            self.tail.push((g, seq, task));
        } else {
            self.settle();
            self.by_group.insert(g, (seq, task));
        }
    }
    /// Replaces the group's queued task in place; returns the old one.
    pub fn replace(&mut self, task: Task) -> Option<Task> {
        let slot = self.get_mut(task.groupid())?;
        Some(std::mem::replace(slot, task))
    }
    pub fn remove(&mut self, group: GroupId) -> Option<Task> {
        self.settle();
        let (_, task) = self.by_group.remove(&group)?;
        // Drop the entries that no longer stand for a task from the front, and compact when
        // most of the line is stale (removals out of order).
        while let Some(&(seq, g)) = self.order.front() {
            if self.is_live(seq, g) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.by_group.len() + 16 {
            let by_group = &self.by_group;
            self.order
                .retain(|&(seq, g)| by_group.get(&g).is_some_and(|(s, _)| *s == seq));
        }
        Some(task)
    }
    /// The group's arrival number and task.
    fn entry(&self, group: GroupId) -> Option<(u64, &Task)> {
        match self.in_tail(group) {
            Some(Ok(i)) => Some((self.tail[i].1, &self.tail[i].2)),
            Some(Err(_)) => None,
            None => self.by_group.get(&group).map(|(seq, t)| (*seq, t)),
        }
    }
    /// Where the group is or would be in the tail; None when it is below the tail (in the
    /// tree, if anywhere).
    fn in_tail(&self, group: GroupId) -> Option<Result<usize, usize>> {
        match self.tail.first() {
            Some(&(first, _, _)) if group >= first => {
                Some(self.tail.binary_search_by_key(&group, |(g, _, _)| *g))
            }
            _ => None,
        }
    }
    /// Moves the tail into the tree: a few tasks one insert each, many in one bulk build (a
    /// tree built from ascending keys, then merged, both in linear time).
    fn settle(&mut self) {
        if self.tail.len() * 8 < self.by_group.len() {
            for (g, seq, t) in self.tail.drain(..) {
                self.by_group.insert(g, (seq, t));
            }
        } else if !self.tail.is_empty() {
            let mut tail: BTreeMap<_, _> = self
                .tail
                .drain(..)
                .map(|(g, seq, t)| (g, (seq, t)))
                .collect();
            self.by_group.append(&mut tail);
        }
    }
    fn is_live(&self, seq: u64, g: GroupId) -> bool {
        self.entry(g).is_some_and(|(s, _)| s == seq)
    }
    /// Groups in arrival order, oldest first.
    pub fn groups_in_order(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups_in_order_from(0).map(|(_, g)| g)
    }
    /// [`TaskQueue::groups_in_order`] from position `from` on, each with its position: a scan
    /// that stops at a group can resume after it while the queue is unchanged.
    pub fn groups_in_order_from(&self, from: usize) -> impl Iterator<Item = (usize, GroupId)> + '_ {
        self.order
            .range(from.min(self.order.len())..)
            .enumerate()
            .filter(|&(_, &(seq, g))| self.is_live(seq, g))
            .map(move |(i, &(_, g))| (from + i, g))
    }
    /// Every queued task, by group.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.arrivals().map(|(_, _, t)| t)
    }
    /// Every queued task with its group and arrival number, by group (what the state exports).
    pub fn arrivals(&self) -> impl ExactSizeIterator<Item = (GroupId, u64, &Task)> {
        Arrivals {
            tree: self.by_group.iter(),
            tail: self.tail.iter(),
        }
    }
    /// The line: (arrival number, group) of the queued tasks, oldest first.
    pub fn line(&self) -> impl Iterator<Item = (u64, GroupId)> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&(seq, g)| self.is_live(seq, g))
    }
    /// The arrival number the next pushed task gets.
    pub fn next_arrival(&self) -> u64 {
        self.next_seq
    }
    /// The queue an export described: [`TaskQueue::arrivals`], [`TaskQueue::line`] (ascending
    /// arrival numbers) and [`TaskQueue::next_arrival`].
    pub fn from_parts(
        arrivals: BTreeMap<GroupId, (u64, Task)>,
        line: VecDeque<(u64, GroupId)>,
        next_arrival: u64,
    ) -> Self {
        TaskQueue {
            by_group: arrivals,
            tail: Vec::new(),
            order: line,
            next_seq: next_arrival,
        }
    }
    pub fn clear(&mut self) -> Vec<Task> {
        self.order.clear();
        let tree = std::mem::take(&mut self.by_group).into_values();
        let tail = self.tail.drain(..).map(|(_, _, t)| t);
        tree.map(|(_, t)| t).chain(tail).collect()
    }
}

/// [`TaskQueue::arrivals`]: the tree's tasks, then the tail's (whose groups are above them).
struct Arrivals<'a> {
    tree: std::collections::btree_map::Iter<'a, GroupId, (u64, Task)>,
    tail: std::slice::Iter<'a, (GroupId, u64, Task)>,
}

impl<'a> Iterator for Arrivals<'a> {
    type Item = (GroupId, u64, &'a Task);
    fn next(&mut self) -> Option<Self::Item> {
        match self.tree.next() {
            Some((&g, (seq, t))) => Some((g, *seq, t)),
            None => self.tail.next().map(|(g, seq, t)| (*g, *seq, t)),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.tree.len() + self.tail.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Arrivals<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, g: GroupId) -> Task {
        Wanted {
            group: Group::new(g),
            event: EventKind::AfterPromote,
            origin: Origin::Heartbeat,
            cooldown_ms: 10_000,
        }
        .queued(id)
    }

    #[test]
    fn replace_keeps_the_place_in_line() {
        let mut q = TaskQueue::default();
        q.push(task(1, 3));
        q.push(task(2, 1));
        q.push(task(3, 2));
        assert_eq!(q.replace(task(4, 3)).unwrap().id, 1);
        assert_eq!(q.groups_in_order().collect::<Vec<_>>(), vec![3, 1, 2]);
        assert_eq!(q.get(3).unwrap().id, 4);
        q.remove(3);
        assert_eq!(q.groups_in_order().next(), Some(1));
        assert_eq!(q.len(), 2);
        assert!(q.replace(task(9, 7)).is_none());
    }

    #[test]
    fn removed_tasks_leave_the_line() {
        let mut q = TaskQueue::default();
        for (id, g) in [(1, 5), (2, 6), (3, 7), (4, 8)] {
            q.push(task(id, g));
        }
        q.remove(6);
        q.remove(5);
        assert_eq!(q.groups_in_order().collect::<Vec<_>>(), vec![7, 8]);
        q.push(task(5, 6));
        assert_eq!(q.groups_in_order().collect::<Vec<_>>(), vec![7, 8, 6]);
        assert_eq!(q.line().collect::<Vec<_>>(), vec![(2, 7), (3, 8), (4, 6)]);
        let back = TaskQueue::from_parts(
            q.arrivals()
                .map(|(g, seq, t)| (g, (seq, t.clone())))
                .collect(),
            q.line().collect(),
            q.next_arrival(),
        );
        assert_eq!(back.groups_in_order().collect::<Vec<_>>(), vec![7, 8, 6]);
        // Removals out of order are compacted away before the line grows without bound.
        for i in 0..100 {
            q.push(task(100 + i, 100 + i as GroupId));
            q.remove(100 + i as GroupId);
        }
        assert!(q.order.len() <= 2 * q.len() + 16, "{}", q.order.len());
    }

    /// Pushes, replaces and removes in any order, against a plain model: a map by group and
    /// the arrival order (the tail and its settling must be invisible).
    #[test]
    fn the_ascending_tail_is_invisible() {
        use proptest::prelude::*;
        let ops = proptest::collection::vec((0u8..3, 0..40 as GroupId), 0..200);
        proptest!(|(ops in ops)| {
            let mut q = TaskQueue::default();
            let mut model: BTreeMap<GroupId, u64> = BTreeMap::new();
            let mut line: Vec<GroupId> = Vec::new();
            for (id, (op, g)) in ops.into_iter().enumerate() {
                let id = id as u64;
                match op {
                    0 if !model.contains_key(&g) => {
                        q.push(task(id, g));
                        model.insert(g, id);
                        line.push(g);
                    }
                    1 => {
                        let had = model.get(&g).copied();
                        prop_assert_eq!(q.replace(task(id, g)).map(|t| t.id), had);
                        if had.is_some() {
                            model.insert(g, id);
                        }
                    }
                    _ => {
                        prop_assert_eq!(q.remove(g).map(|t| t.id), model.remove(&g));
                        line.retain(|&x| x != g);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                for g in 0..40 {
                    prop_assert_eq!(q.get(g).map(|t| t.id), model.get(&g).copied());
                }
                let by_group: Vec<_> = q.arrivals().map(|(g, _, t)| (g, t.id)).collect();
                prop_assert_eq!(by_group, model.iter().map(|(&g, &id)| (g, id)).collect::<Vec<_>>());
                prop_assert_eq!(q.arrivals().len(), model.len());
                prop_assert_eq!(q.groups_in_order().collect::<Vec<_>>(), line.clone());
            }
        });
    }
}
