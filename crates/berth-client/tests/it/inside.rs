//! Files, exec and the terminal's diagnosis through the client, on the process backend with the
//! reference agent: bytes written and read back exactly, listings, the bulk overlay, deletion,
//! a command's exit code and streams, and the server's refusals as `Error::Api`.

use berth_client::Error;
use berth_client::berth_api::inside::{ExecBody, FilesQuery, ReplaceFiles};
use berth_client::berth_api::workspaces::CreateWorkspace;
use std::collections::BTreeMap;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(files_and_exec_through_the_client);

async fn files_and_exec_through_the_client(b: &Berth) {
    let created = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "inside".into(),
            template: "echo".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    let id = created.id;
    b.client
        .wait_until_settled(id, |_| {})
        .await
        .expect("online");

    let bytes: Vec<u8> = vec![0, 1, 2, 255, b'\n', b' '];
    let saved = b
        .client
        .write_file(id, "dir/with space.bin", Some("/workspace"), bytes.clone())
        .await
        .expect("write");
    assert_eq!(saved.status, "saved");
    assert_eq!(saved.path, "dir/with space.bin");
    assert!(!saved.restart_scheduled);
    let back = b
        .client
        .read_file(id, "dir/with space.bin", Some("/workspace"))
        .await
        .expect("read");
    assert_eq!(back, bytes);

    let replaced = b
        .client
        .replace_files(
            id,
            Some("/workspace"),
            &ReplaceFiles {
                files: BTreeMap::from([("a.md".to_owned(), "A".to_owned())]),
            },
        )
        .await
        .expect("replace");
    assert_eq!(replaced.files, 1);
    let listing = b
        .client
        .list_files(
            id,
            &FilesQuery {
                root: Some("/workspace".into()),
                depth: Some("2".into()),
                ..FilesQuery::default()
            },
        )
        .await
        .expect("list");
    let paths: Vec<&str> = listing.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a.md", "dir", "dir/with space.bin"]);
    assert_eq!(listing[2].size, 6);

    let deleted = b
        .client
        .delete_file(id, "dir", Some("/workspace"))
        .await
        .expect("delete");
    assert_eq!(deleted.status, "deleted");
    match b
        .client
        .read_file(id, "dir/with space.bin", Some("/workspace"))
        .await
    {
        Err(Error::Api { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("a deleted file reads as 404, got {other:?}"),
    }
    // (A `..` component never reaches the server: URLs resolve it before they are sent.)
    match b.client.read_file(id, "/etc/passwd", None).await {
        Err(Error::Api { status, body, .. }) => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(body["error"], "invalid path");
        }
        other => panic!("an escaping path is a 400, got {other:?}"),
    }

    let out = b
        .client
        .exec(
            id,
            &ExecBody {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "cat a.md; echo oops >&2; exit 2".into(),
                ],
                timeout_secs: Some(10),
                ..ExecBody::default()
            },
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, Some(2));
    assert_eq!(out.stdout, "A");
    assert_eq!(out.stderr, "oops\n");
    assert!(!out.timed_out);

    let diagnosis = b.client.terminal_diagnose(id).await.expect("diagnose");
    assert!(diagnosis.ok, "{diagnosis:?}");
    assert!(
        b.client
            .terminal_url(id, 24, 80)
            .starts_with("ws://127.0.0.1:")
    );
}
