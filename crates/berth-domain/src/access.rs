//! The hierarchy access rule `CanCommunicate(caller, target)` (REFERENCE-2.md §1.1), evaluated
//! over an in-memory snapshot of `(id, parent_id)` pairs so callers (discovery, peers, the event
//! filter, the A2A proxy) never need a database round trip per decision.

use std::collections::HashMap;

use crate::WorkspaceId;

/// How many ancestor lookups a walk may take before it is treated as a cycle.
pub const MAX_ANCESTOR_WALK: usize = 32;

/// A snapshot of the workspace tree: every known workspace and its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    parents: HashMap<WorkspaceId, Option<WorkspaceId>>,
}

impl Hierarchy {
    /// Builds a snapshot from `(id, parent)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (WorkspaceId, Option<WorkspaceId>)>) -> Self {
        Self {
            parents: pairs.into_iter().collect(),
        }
    }

    /// Adds or replaces one workspace.
    pub fn insert(&mut self, id: WorkspaceId, parent: Option<WorkspaceId>) {
        self.parents.insert(id, parent);
    }

    /// The parent of `id`: `None` when `id` is unknown, `Some(None)` for a root.
    pub fn parent(&self, id: WorkspaceId) -> Option<Option<WorkspaceId>> {
        self.parents.get(&id).copied()
    }

    /// Whether `ancestor` is a proper ancestor of `id` (walk capped at [`MAX_ANCESTOR_WALK`]).
    pub fn is_ancestor(&self, ancestor: WorkspaceId, id: WorkspaceId) -> bool {
        let mut current = self.parent(id).flatten();
        for _ in 0..MAX_ANCESTOR_WALK {
            match current {
                None => return false,
                Some(p) if p == ancestor => return true,
                Some(p) => current = self.parent(p).flatten(),
            }
        }
        false
    }

    /// Every descendant of `id` at any depth (whatever its status), children first.
    pub fn descendants(&self, id: WorkspaceId) -> Vec<WorkspaceId> {
        let mut out = Vec::new();
        let mut frontier = vec![id];
        while let Some(current) = frontier.pop() {
            let mut children: Vec<WorkspaceId> = self
                .parents
                .iter()
                .filter(|(c, p)| **p == Some(current) && **c != id && !out.contains(*c))
                .map(|(c, _)| *c)
                .collect();
            children.sort();
            out.extend(children.iter().copied());
            frontier.extend(children);
        }
        out
    }

    /// The rule, first hit wins: same workspace; both known and siblings (same parent, or both
    /// roots); parent ↔ child; any ancestor ↔ descendant. Status is ignored, as in the reference.
    pub fn can_communicate(&self, caller: WorkspaceId, target: WorkspaceId) -> bool {
        if caller == target {
            return true;
        }
        let (Some(cp), Some(tp)) = (self.parent(caller), self.parent(target)) else {
            return false;
        };
        if cp == tp {
            return true;
        }
        if tp == Some(caller) || cp == Some(target) {
            return true;
        }
        self.is_ancestor(caller, target) || self.is_ancestor(target, caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<WorkspaceId> {
        (0..n).map(|_| WorkspaceId::new_v4()).collect()
    }

    #[test]
    fn the_rule_row_by_row() {
        // r1 ─ a ─ a1 ─ a1x
        //    └ b ─ b1
        // r2 (another root)
        let v = ids(7);
        let (r1, a, a1, a1x, b, b1, r2) = (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        let h = Hierarchy::new([
            (r1, None),
            (a, Some(r1)),
            (a1, Some(a)),
            (a1x, Some(a1)),
            (b, Some(r1)),
            (b1, Some(b)),
            (r2, None),
        ]);
        let unknown = WorkspaceId::new_v4();
        assert!(h.can_communicate(unknown, unknown), "same id, even unknown");
        assert!(h.can_communicate(a, b), "siblings");
        assert!(h.can_communicate(r1, r2), "roots are siblings");
        assert!(
            h.can_communicate(r1, a) && h.can_communicate(a, r1),
            "parent <-> child"
        );
        assert!(
            h.can_communicate(r1, a1x) && h.can_communicate(a1x, r1),
            "ancestor <-> descendant"
        );
        assert!(!h.can_communicate(a1, b), "nephew -> uncle denied");
        assert!(!h.can_communicate(a, b1), "uncle -> nephew denied");
        assert!(!h.can_communicate(a1, b1), "cousins denied");
        assert!(!h.can_communicate(r2, a), "unrelated denied");
        assert!(
            !h.can_communicate(a, unknown) && !h.can_communicate(unknown, a),
            "unknown denied"
        );
    }

    #[test]
    fn descendants_at_any_depth() {
        let v = ids(4);
        let h = Hierarchy::new([
            (v[0], None),
            (v[1], Some(v[0])),
            (v[2], Some(v[1])),
            (v[3], None),
        ]);
        assert_eq!(h.descendants(v[0]), vec![v[1], v[2]]);
        assert!(h.descendants(v[3]).is_empty());
        let cyc = Hierarchy::new([(v[0], Some(v[1])), (v[1], Some(v[0]))]);
        assert_eq!(cyc.descendants(v[0]), vec![v[1]]);
    }

    #[test]
    fn cycles_and_deep_chains_terminate() {
        let v = ids(2);
        let h = Hierarchy::new([(v[0], Some(v[1])), (v[1], Some(v[0]))]);
        assert!(h.can_communicate(v[0], v[1]));
        let w = WorkspaceId::new_v4();
        assert!(!h.is_ancestor(w, v[0]));
        // A chain deeper than the cap is not walked to its end.
        let chain = ids(40);
        let mut h = Hierarchy::new([(chain[0], None)]);
        for i in 1..40 {
            h.insert(chain[i], Some(chain[i - 1]));
        }
        assert!(h.is_ancestor(chain[39 - 32], chain[39]));
        assert!(!h.is_ancestor(chain[39 - 33], chain[39]));
    }
}
