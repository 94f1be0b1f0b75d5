//! The files API's `/configs` edits (`workspace_config_edits`): writes replace, a deletion is a
//! tombstone that also drops every edit beneath its path (and only beneath: `skills` does not
//! take `skills2`), bytes are kept exactly, an unknown or removed workspace records nothing, and
//! a workspace's edits go with its row.

use berth_domain::WorkspaceId;
use berth_store::{ConfigEdit, Error};

use crate::harness::{Backend, both, create_workspace};

both!(
    edits_replace_and_tombstones_clear_beneath,
    edits_of_unknown_workspaces_are_refused,
);

fn write(path: &str, content: &[u8]) -> ConfigEdit {
    ConfigEdit {
        path: path.into(),
        content: Some(content.to_vec()),
    }
}

fn delete(path: &str) -> ConfigEdit {
    ConfigEdit {
        path: path.into(),
        content: None,
    }
}

async fn edits_replace_and_tombstones_clear_beneath(b: Backend) {
    let store = b.store();
    let id = create_workspace(&b, "edited").await;
    let other = create_workspace(&b, "other").await;
    assert!(store.config_edits(id).await.unwrap().is_empty());

    let binary = [0u8, 255, 10, 13, 0xC3];
    store
        .record_config_edits(
            id,
            vec![
                write("system-prompt.md", b"v1"),
                write("skills/a/SKILL.md", b"a"),
                write("skills/b.md", b"b"),
                write("skills2/c.md", b"c"),
                write("bin/x", &binary),
            ],
        )
        .await
        .unwrap();
    store
        .record_config_edits(other, vec![write("skills/a/SKILL.md", b"other")])
        .await
        .unwrap();
    // A later write replaces; a directory deletion drops what is beneath it, nothing else.
    store
        .record_config_edits(id, vec![write("system-prompt.md", b"v2"), delete("skills")])
        .await
        .unwrap();
    assert_eq!(
        store.config_edits(id).await.unwrap(),
        vec![
            write("bin/x", &binary),
            delete("skills"),
            write("skills2/c.md", b"c"),
            write("system-prompt.md", b"v2"),
        ]
    );
    assert_eq!(
        store.config_edits(other).await.unwrap(),
        vec![write("skills/a/SKILL.md", b"other")],
        "another workspace's edits are its own"
    );
    // Writing the deleted path again replaces the tombstone.
    store
        .record_config_edits(id, vec![write("skills", b"now a file")])
        .await
        .unwrap();
    assert!(
        store
            .config_edits(id)
            .await
            .unwrap()
            .contains(&write("skills", b"now a file"))
    );
    assert_eq!(b.count("workspace_config_edits").await, 5);
}

async fn edits_of_unknown_workspaces_are_refused(b: Backend) {
    let store = b.store();
    let err = store
        .record_config_edits(WorkspaceId::new_v4(), vec![write("a", b"x")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    assert_eq!(b.count("workspace_config_edits").await, 0);
}
