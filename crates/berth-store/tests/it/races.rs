//! Creating a child races deleting its parent (or grandparent), many times, on both backends.
//!
//! A delete is what the core runs: read the live descendants, remove the root with them in one
//! transaction, then read the tree again and remove what a create slipped in meanwhile. The
//! store's part of the bargain: a create either commits before the removal does, and is then seen
//! by the read right after it, or is refused. So no live child is left under a removed parent,
//! and nothing deadlocks. (Without the parent's row lock, PostgreSQL left such a child within the
//! 200 rounds in each of three runs.)

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use berth_store::{Error, NewWorkspace, WorkspaceStore};

use crate::harness::Backend;

/// Rounds per backend: the race is PostgreSQL's (SQLite runs one writer at a time), so SQLite runs
/// fewer.
const PG_ROUNDS: usize = 200;
const SQLITE_ROUNDS: usize = 40;

fn workspace(name: &str, parent: Option<WorkspaceId>) -> NewWorkspace {
    NewWorkspace {
        parent_id: parent,
        ..crate::harness::new_workspace(name)
    }
}

/// The core's delete of `root`: the removal, then the live rows under removed ones that the
/// reads right after it find in the subtree are removed as well.
async fn delete(s: &dyn WorkspaceStore, root: WorkspaceId) {
    let descendants = s.live_descendants(root).await.unwrap();
    s.remove_workspaces(root, descendants.clone())
        .await
        .unwrap();
    loop {
        let stray = live_under_removed(s, root).await;
        if stray.is_empty() {
            return;
        }
        for (id, _) in stray {
            s.remove_workspaces(id, Vec::new()).await.unwrap();
        }
    }
}

/// Live rows of `root`'s subtree whose parent is removed, with that parent.
async fn live_under_removed(
    s: &dyn WorkspaceStore,
    root: WorkspaceId,
) -> Vec<(WorkspaceId, WorkspaceId)> {
    let tree = s.hierarchy().await.unwrap();
    let mut subtree = vec![root];
    let mut i = 0;
    while i < subtree.len() {
        let parent = subtree[i];
        subtree.extend(
            tree.iter()
                .filter(|(_, p)| *p == Some(parent))
                .map(|(id, _)| *id),
        );
        i += 1;
    }
    let mut found = Vec::new();
    for &(id, parent) in &tree {
        let Some(parent) = parent.filter(|p| subtree.contains(p)) else {
            continue;
        };
        let status = |w| async move { s.get_workspace(w).await.unwrap().unwrap().status };
        if status(parent).await == WorkspaceStatus::Removed
            && status(id).await != WorkspaceStatus::Removed
        {
            found.push((id, parent));
        }
    }
    found
}

/// Whether a create ended as it may: committed, or refused because the parent was removed.
fn settled<T>(result: Result<T, Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(Error::ParentNotFound) => false,
        Err(e) => panic!("create failed otherwise: {e}"),
    }
}

async fn create_child_races_delete_parent(b: Backend, rounds: usize) {
    let s = b.store();
    let (mut created, mut refused) = (0, 0);
    for round in 0..rounds {
        let root = workspace(&format!("root-{round}"), None);
        let root_id = root.id;
        s.create_workspace(root).await.unwrap();
        let mid = workspace("mid", Some(root_id));
        let mid_id = mid.id;
        s.create_workspace(mid).await.unwrap();

        // A child of the root, a grandchild under the cascaded child, and the delete, at once.
        let child = workspace("child", Some(root_id));
        let grandchild = workspace("grandchild", Some(mid_id));
        let (child_id, grandchild_id) = (child.id, grandchild.id);
        let (c, g, ()) = tokio::join!(
            s.create_workspace(child),
            s.create_workspace(grandchild),
            delete(s, root_id),
        );
        for (id, made) in [(child_id, settled(c)), (grandchild_id, settled(g))] {
            let row = s.get_workspace(id).await.unwrap();
            if made {
                created += 1;
            } else {
                refused += 1;
                assert!(row.is_none(), "a refused create wrote its row");
            }
        }
        // What a create committed after the delete's last read would have left behind.
        assert_eq!(
            live_under_removed(s, root_id).await,
            vec![],
            "round {round}: live rows under removed ones"
        );
        for id in [root_id, mid_id] {
            assert_eq!(
                s.get_workspace(id).await.unwrap().unwrap().status,
                WorkspaceStatus::Removed
            );
        }
    }
    assert_eq!(created + refused, 2 * rounds);
}

mod sqlite {
    #[tokio::test]
    async fn create_child_races_delete_parent() {
        super::create_child_races_delete_parent(
            crate::harness::Backend::sqlite().await,
            super::SQLITE_ROUNDS,
        )
        .await;
    }
}

mod postgres {
    #[tokio::test]
    async fn create_child_races_delete_parent() {
        super::create_child_races_delete_parent(
            crate::harness::Backend::postgres().await,
            super::PG_ROUNDS,
        )
        .await;
    }
}
