//! The configs directory an agent finds at `WORKSPACE_CONFIG_PATH`.

use std::os::unix::fs::{PermissionsExt, symlink};

use berth_provision::Provisioner;

use super::*;

const IDLE: &str = "exec sleep 60";

#[tokio::test]
async fn template_config_files_and_secret_files_are_laid_out_before_start() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host-secret"), "do not copy").unwrap();

    let template = tempfile::tempdir().unwrap();
    let t = template.path();
    std::fs::write(t.join("config.yaml"), "name: From Template\n").unwrap();
    std::fs::create_dir_all(t.join("prompts/deep")).unwrap();
    std::fs::write(t.join("prompts/system.md"), "be brief").unwrap();
    std::fs::write(t.join("prompts/deep/x.md"), "deep").unwrap();
    symlink(outside.path().join("host-secret"), t.join("linked-file")).unwrap();
    symlink(outside.path(), t.join("linked-dir")).unwrap();

    // The agent checks its configs exist the moment it starts.
    let script = r#"test -f "$WORKSPACE_CONFIG_PATH/config.yaml" && test -f "$WORKSPACE_CONFIG_PATH/.auth_token" || exit 9; exec sleep 60"#;
    let p = provisioner(root.path(), &[("idle", script)]);
    let mut req = request("idle");
    req.template_path = Some(t.to_path_buf());
    req.config_files
        .insert("extra.yaml".into(), b"extra: 1\n".to_vec());
    req.config_files
        .insert("prompts/system.md".into(), b"overridden".to_vec());
    req.secret_files = vec![
        (".auth_token".into(), secret("tok-123")),
        (".platform_inbound_secret".into(), secret("inbound")),
    ];
    let id = req.workspace_id;

    // Left over from an earlier run: a restart replaces the directory's contents.
    let configs = root.path().join(id.to_string()).join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("stale.txt"), "old").unwrap();

    p.start(req).await.unwrap();

    let read = |rel: &str| std::fs::read_to_string(configs.join(rel)).unwrap();
    assert_eq!(read("config.yaml"), "name: From Template\n");
    assert_eq!(read("prompts/deep/x.md"), "deep");
    assert_eq!(
        read("prompts/system.md"),
        "overridden",
        "config files win over the template"
    );
    assert_eq!(read("extra.yaml"), "extra: 1\n");
    assert_eq!(read(".auth_token"), "tok-123");
    assert_eq!(read(".platform_inbound_secret"), "inbound");
    for secret_file in [".auth_token", ".platform_inbound_secret"] {
        let mode = std::fs::metadata(configs.join(secret_file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret_file}");
    }
    assert!(
        !configs.join("linked-file").exists(),
        "symlinks are skipped"
    );
    assert!(
        !configs.join("linked-dir").exists(),
        "symlinked dirs are skipped"
    );
    assert!(
        !configs.join("stale.txt").exists(),
        "previous contents are replaced"
    );
    assert!(p.is_running(id).await.unwrap());

    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn config_paths_escaping_the_configs_dir_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("idle", IDLE)]);
    for bad in ["../escape.txt", "/tmp/abs.txt", "a/../../escape.txt"] {
        let mut req = request("idle");
        req.config_files.insert(bad.into(), b"x".to_vec());
        let id = req.workspace_id;
        let err = p.start(req).await.unwrap_err();
        assert_eq!(err.code(), "START_FAILED", "{bad}: {err}");
        assert!(!p.is_running(id).await.unwrap());
        assert!(!root.path().join(id.to_string()).join("escape.txt").exists());
    }
    assert!(!root.path().join("escape.txt").exists());

    let mut req = request("idle");
    req.secret_files = vec![("../.auth_token".into(), secret("t"))];
    assert_eq!(p.start(req).await.unwrap_err().code(), "START_FAILED");
}
