//! The workspace core against mocks of its ports (mockall): one layer at a time. The same flows
//! run against the real stores in `berth-http`'s and `berth-store`'s integration suites.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::{
    CoreConfig, CreateContext, CreateError, CreateRequest, MockHostResolver, TemplateCatalog,
    WorkspaceService,
};
use berth_domain::WorkspaceId;
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_provision::{BackendKind, MockProvisioner, NoBackend};
use berth_store::{Error as StoreError, MockWorkspaceStore};

fn service(
    store: MockWorkspaceStore,
    provisioner: Arc<dyn berth_provision::Provisioner>,
    resolver: MockHostResolver,
) -> WorkspaceService {
    let dir = std::env::temp_dir();
    WorkspaceService::new(
        Arc::new(store),
        provisioner,
        Arc::new(resolver),
        TemplateCatalog::empty(dir),
        CoreConfig::default(),
    )
}

/// A predicate over the expected error.
type Check = fn(&CreateError) -> bool;

fn request(name: &str) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        model: "openai/gpt-4o".into(),
        ..Default::default()
    }
}

/// A stored workspace `id` in `status`, as `get_workspace` reads it.
fn row(id: WorkspaceId, status: WorkspaceStatus) -> berth_store::Workspace {
    let now = berth_store::now();
    berth_store::Workspace {
        id,
        name: "w".into(),
        role: None,
        tier: 3,
        status,
        agent_card: None,
        url: None,
        url_from_provisioner: false,
        parent_id: None,
        active_tasks: 0,
        max_concurrent_tasks: 1,
        last_error_rate: 0.0,
        last_sample_error: None,
        failure_code: None,
        uptime_seconds: 0,
        current_task: None,
        runtime: "claude-code".into(),
        workspace_dir: None,
        workspace_access: "none".into(),
        delivery_mode: "push".into(),
        x: 0.0,
        y: 0.0,
        collapsed: false,
        budget_limit: None,
        monthly_spend: 0,
        broadcast_enabled: false,
        talk_to_user_enabled: false,
        compute: serde_json::json!({}),
        last_outbound_at: None,
        last_heartbeat_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// The store reads every workspace back in `status` (the failure path re-reads it before it
/// stops the backend; a finished start reads it to see whether it must undo itself).
fn reads_back(store: &mut MockWorkspaceStore, status: WorkspaceStatus) {
    store
        .expect_get_workspace()
        .returning(move |id| Ok(Some(row(id, status))));
}

#[tokio::test]
async fn invalid_requests_never_reach_the_store() {
    // A mock with no expectations panics on any call.
    let svc = service(
        MockWorkspaceStore::new(),
        Arc::new(NoBackend),
        MockHostResolver::new(),
    );
    let cases: Vec<(CreateRequest, Check)> = vec![
        (CreateRequest::default(), |e| {
            matches!(e, CreateError::InvalidPayload)
        }),
        (request("a\nb"), |e| {
            matches!(e, CreateError::InvalidFields(_))
        }),
        (
            CreateRequest {
                tier: 9,
                ..request("x")
            },
            |e| matches!(e, CreateError::InvalidTier),
        ),
        (
            CreateRequest {
                model: String::new(),
                ..request("x")
            },
            |e| matches!(e, CreateError::ModelRequired { .. }),
        ),
        (
            CreateRequest {
                runtime: "nope".into(),
                ..request("x")
            },
            |e| matches!(e, CreateError::UnknownRuntime { .. }),
        ),
        (
            CreateRequest {
                template: "../etc".into(),
                ..request("x")
            },
            |e| matches!(e, CreateError::InvalidTemplate(_)),
        ),
        (
            CreateRequest {
                parent_id: Some("not-a-uuid".into()),
                ..request("x")
            },
            |e| matches!(e, CreateError::InvalidParentId),
        ),
        (
            CreateRequest {
                budget_limit: Some(-1),
                ..request("x")
            },
            |e| matches!(e, CreateError::InvalidBudget),
        ),
        (
            CreateRequest {
                delivery_mode: "fax".into(),
                ..request("x")
            },
            |e| matches!(e, CreateError::InvalidDeliveryMode),
        ),
        (
            CreateRequest {
                url: "http://169.254.169.254/".into(),
                ..request("x")
            },
            |e| matches!(e, CreateError::UnsafeUrl(_)),
        ),
    ];
    for (req, expected) in cases {
        let err = svc
            .create(req.clone(), CreateContext::default())
            .await
            .unwrap_err();
        assert!(expected(&err), "{req:?} gave {err:?}");
    }
}

#[tokio::test]
async fn dns_answers_decide_the_ssrf_check() {
    let mut resolver = MockHostResolver::new();
    resolver
        .expect_resolve()
        .withf(|h| h == "internal.example")
        .returning(|_| Ok(vec!["10.1.2.3".parse().unwrap()]));
    resolver
        .expect_resolve()
        .withf(|h| h == "gone.example")
        .returning(|_| Err("no such host".into()));
    let svc = service(MockWorkspaceStore::new(), Arc::new(NoBackend), resolver);
    let ext = |url: &str| CreateRequest {
        external: true,
        url: url.into(),
        ..request("e")
    };
    let e = svc
        .create(
            ext("https://internal.example/a2a"),
            CreateContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsafe workspace URL: hostname \"internal.example\" resolves to forbidden address: url targets a blocked address: RFC-1918 private address"
    );
    let e = svc
        .create(ext("https://gone.example/a2a"), CreateContext::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsafe workspace URL: hostname \"gone.example\" cannot be resolved (DNS error): no such host"
    );
}

#[tokio::test]
async fn a_lost_name_race_retries_with_the_next_free_name() {
    let mut store = MockWorkspaceStore::new();
    let reads = Arc::new(AtomicUsize::new(0));
    let r = reads.clone();
    // First read: nothing taken; after the lost race the base name shows up as taken.
    store.expect_taken_names().returning(move |_, _| {
        Ok(if r.fetch_add(1, Ordering::SeqCst) == 0 {
            vec![]
        } else {
            vec!["dup".to_owned()]
        })
    });
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    store.expect_create_workspace().returning(move |new| {
        if w.fetch_add(1, Ordering::SeqCst) == 0 {
            assert_eq!(new.name, "dup");
            Err(StoreError::NameTaken)
        } else {
            assert_eq!(new.name, "dup (2)");
            assert_eq!(new.status, WorkspaceStatus::AwaitingAgent);
            assert!(
                new.token.is_some(),
                "an external workspace without url gets a token"
            );
            Ok(None)
        }
    });
    let svc = service(store, Arc::new(NoBackend), MockHostResolver::new());
    let req = CreateRequest {
        external: true,
        ..request("dup")
    };
    let created = svc
        .create(
            req,
            CreateContext {
                platform_url: "http://p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.response.status, WorkspaceStatus::AwaitingAgent);
    assert_eq!(writes.load(Ordering::SeqCst), 2);
    let conn = created.response.connection.expect("connection payload");
    assert_eq!(conn["auth_token"].as_str().map(str::len), Some(43));
}

#[tokio::test]
async fn store_failures_surface_as_store_errors() {
    let mut store = MockWorkspaceStore::new();
    store.expect_taken_names().returning(|_, _| Ok(vec![]));
    store
        .expect_create_workspace()
        .returning(|_| Err(StoreError::Backend("disk full".into())));
    // The row is not there: the create did not commit.
    store
        .expect_get_workspace()
        .times(1)
        .returning(|_| Ok(None));
    let svc = service(store, Arc::new(NoBackend), MockHostResolver::new());
    let e = svc
        .create(request("x"), CreateContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, CreateError::Store(StoreError::Backend(_))),
        "{e:?}"
    );
}

/// Issue #19: an error that arrives after the database committed (seen as `unexpected message`
/// while reading COMMIT's answer) must not turn a committed create into a 500: the row decides.
#[tokio::test]
async fn a_create_whose_commit_went_through_despite_an_error_succeeds() {
    let mut store = MockWorkspaceStore::new();
    store.expect_taken_names().returning(|_, _| Ok(vec![]));
    let written = Arc::new(std::sync::Mutex::new(None));
    let w = written.clone();
    store
        .expect_create_workspace()
        .times(1)
        .returning(move |new| {
            *w.lock().unwrap() = Some(new.id);
            Err(StoreError::Backend(
                "error returned from database: unexpected message: NotificationResponse".into(),
            ))
        });
    let r = written.clone();
    store.expect_get_workspace().times(1).returning(move |id| {
        assert_eq!(Some(id), *r.lock().unwrap(), "the create's own row is read");
        Ok(Some(row(id, WorkspaceStatus::AwaitingAgent)))
    });
    let svc = service(store, Arc::new(NoBackend), MockHostResolver::new());
    let req = CreateRequest {
        external: true,
        ..request("committed")
    };
    let created = svc
        .create(
            req,
            CreateContext {
                platform_url: "http://p".into(),
                ..Default::default()
            },
        )
        .await
        .expect("a committed create succeeds");
    assert!(!created.replayed);
    assert_eq!(Some(created.response.id), *written.lock().unwrap());
}

#[tokio::test]
async fn a_provisioner_error_marks_the_workspace_failed_with_its_code() {
    let mut store = MockWorkspaceStore::new();
    store.expect_taken_names().returning(|_, _| Ok(vec![]));
    store.expect_create_workspace().returning(|_| Ok(None));
    store.expect_workspace_secrets().returning(|_| Ok(vec![]));
    store.expect_open_secrets().returning(|_| Ok(vec![]));
    store.expect_issue_token().returning(|_, _, _| Ok(()));
    store.expect_set_inbound_secret().returning(|_, _| Ok(()));
    store
        .expect_transition()
        .withf(|_, c| {
            c.transition == Transition::ProvisionFailed
                && c.failure.as_ref().is_some_and(|(code, msg)| {
                    code == "IMAGE_NOT_FOUND" && msg.contains("claude-code")
                })
                && c.payload["code"] == "IMAGE_NOT_FOUND"
        })
        .times(1)
        .returning(|_, _| Ok(true));
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    prov.expect_start()
        .withf(|r| {
            r.secret_files.iter().any(|(n, _)| n == ".auth_token")
                && r.env.iter().any(|(k, _)| k == "MODEL")
        })
        .returning(|r| Err(berth_provision::Error::ImageNotFound(r.runtime)));
    // A failed workspace has nothing left on its backend.
    reads_back(&mut store, WorkspaceStatus::Failed);
    prov.expect_stop().times(1).returning(|_| Ok(()));
    let svc = service(store, Arc::new(prov), MockHostResolver::new());
    svc.create(request("p"), CreateContext::default())
        .await
        .unwrap();
    svc.drain().await;
}

#[tokio::test]
async fn provision_timeouts_count_from_the_start_of_provisioning() {
    let (old, fresh) = (WorkspaceId::new_v4(), WorkspaceId::new_v4());
    let mut store = MockWorkspaceStore::new();
    store.expect_provisioning().returning(move || {
        let now = berth_store::now();
        Ok(vec![
            (
                old,
                "claude-code".into(),
                Some(now - chrono::Duration::seconds(601)),
            ),
            (
                fresh,
                "claude-code".into(),
                Some(now - chrono::Duration::seconds(30)),
            ),
            (WorkspaceId::new_v4(), "claude-code".into(), None),
        ])
    });
    store
        .expect_transition()
        .withf(move |id, c| {
            *id == old
                && c.failure
                    .as_ref()
                    .is_some_and(|(code, _)| code == "TIMEOUT")
                && c.payload["source"] == "provision_timeout_sweep"
        })
        .times(1)
        .returning(|_, _| Ok(true));
    let svc = service(store, Arc::new(NoBackend), MockHostResolver::new());
    assert_eq!(svc.sweep_provision_timeouts().await.unwrap(), vec![old]);
    assert_eq!(svc.provision_timeout_for("hermes").as_secs(), 1800);
    assert_eq!(svc.provision_timeout_for("claude-code").as_secs(), 600);
}

/// A store holding one workspace `provisioning` for 601 s that the timeout sweep may fail, and
/// that reads it back in `now` afterwards.
fn timed_out_store(id: WorkspaceId, now: WorkspaceStatus) -> MockWorkspaceStore {
    let mut store = MockWorkspaceStore::new();
    store.expect_provisioning().returning(move || {
        let started = berth_store::now() - chrono::Duration::seconds(601);
        Ok(vec![(id, "claude-code".into(), Some(started))])
    });
    store
        .expect_transition()
        .withf(move |got, c| *got == id && c.transition == Transition::ProvisionFailed)
        .times(1)
        .returning(|_, _| Ok(true));
    reads_back(&mut store, now);
    store
}

/// A process-backend provisioner that counts its stops of `id` (the stop runs in a background
/// task, where a mock's own `never()` would only panic that task).
fn counting_stops(id: WorkspaceId) -> (MockProvisioner, Arc<AtomicUsize>) {
    let stops = Arc::new(AtomicUsize::new(0));
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    let counter = stops.clone();
    prov.expect_stop().returning(move |got| {
        assert_eq!(got, id);
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    (prov, stops)
}

#[tokio::test]
async fn a_timed_out_workspace_has_its_agent_stopped() {
    let id = WorkspaceId::new_v4();
    let (prov, stops) = counting_stops(id);
    let svc = service(
        timed_out_store(id, WorkspaceStatus::Failed),
        Arc::new(prov),
        MockHostResolver::new(),
    );
    assert_eq!(svc.sweep_provision_timeouts().await.unwrap(), vec![id]);
    svc.drain().await;
    assert_eq!(stops.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_workspace_that_moved_on_before_the_stop_keeps_its_agent() {
    // Restarted between the failure and the stop: the agent is the new start's.
    let id = WorkspaceId::new_v4();
    let (prov, stops) = counting_stops(id);
    let svc = service(
        timed_out_store(id, WorkspaceStatus::Provisioning),
        Arc::new(prov),
        MockHostResolver::new(),
    );
    assert_eq!(svc.sweep_provision_timeouts().await.unwrap(), vec![id]);
    svc.drain().await;
    assert_eq!(stops.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn operator_credentials_in_global_secrets_abort_provisioning() {
    let mut store = MockWorkspaceStore::new();
    store.expect_taken_names().returning(|_, _| Ok(vec![]));
    store.expect_create_workspace().returning(|_| Ok(None));
    store.expect_open_secrets().returning(|_| {
        Ok(vec![berth_store::OpenedSecret {
            key: "GITHUB_TOKEN".into(),
            key_id: "k1".into(),
            value: Ok(secrecy::SecretString::from("ghp_operator".to_owned())),
        }])
    });
    store.expect_workspace_secrets().returning(|_| Ok(vec![]));
    store
        .expect_transition()
        .withf(|_, c| {
            c.transition == Transition::ProvisionFailed
                && c.failure.as_ref().is_some_and(|(code, msg)| {
                    code == "FORBIDDEN_ENV"
                        && msg.contains("GITHUB_TOKEN")
                        && !msg.contains("ghp_operator")
                })
        })
        .times(1)
        .returning(|_, _| Ok(true));
    // The provisioner is never asked to start, only to stop what may be left.
    reads_back(&mut store, WorkspaceStatus::Failed);
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    prov.expect_stop().times(1).returning(|_| Ok(()));
    let svc = service(store, Arc::new(prov), MockHostResolver::new());
    svc.create(request("p"), CreateContext::default())
        .await
        .unwrap();
    svc.drain().await;
}

/// A store that accepts one create and its provisioning preparation.
fn provisioning_store(expected_failure: Option<&'static str>) -> MockWorkspaceStore {
    let mut store = MockWorkspaceStore::new();
    store.expect_taken_names().returning(|_, _| Ok(vec![]));
    store.expect_create_workspace().returning(|_| Ok(None));
    store.expect_open_secrets().returning(|_| Ok(vec![]));
    store.expect_workspace_secrets().returning(|_| Ok(vec![]));
    store.expect_issue_token().returning(|_, _, _| Ok(()));
    store.expect_set_inbound_secret().returning(|_, _| Ok(()));
    store.expect_set_provisioned().returning(|_, _, _| Ok(()));
    match expected_failure {
        Some(code) => {
            store
                .expect_transition()
                .withf(move |_, c| c.failure.as_ref().is_some_and(|(got, _)| got == code))
                .times(1)
                .returning(|_, _| Ok(true));
            reads_back(&mut store, WorkspaceStatus::Failed);
        }
        None => {
            store.expect_transition().never();
            reads_back(&mut store, WorkspaceStatus::Provisioning);
        }
    }
    store
}

#[tokio::test]
async fn env_mutators_run_in_order_and_can_abort() {
    use secrecy::{ExposeSecret as _, SecretString};
    let mut first = berth_core::MockEnvMutator::new();
    first.expect_name().return_const("first".to_owned());
    first.expect_mutate_env().returning(|_, env| {
        env.push((
            "INSTALLATION_TOKEN".into(),
            SecretString::from("short-lived".to_owned()),
        ));
        Ok(())
    });
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    prov.expect_start()
        .withf(|r| {
            r.env
                .iter()
                .any(|(k, v)| k == "INSTALLATION_TOKEN" && v.expose_secret() == "short-lived")
        })
        .times(1)
        .returning(|_| {
            Ok(berth_provision::Started {
                url: Some("http://127.0.0.1:1".into()),
                instance_id: None,
            })
        });
    let svc = service(
        provisioning_store(None),
        Arc::new(prov),
        MockHostResolver::new(),
    )
    .with_env_mutator(Arc::new(first));
    svc.create(request("hooked"), CreateContext::default())
        .await
        .unwrap();
    svc.drain().await;

    let mut failing = berth_core::MockEnvMutator::new();
    failing.expect_name().return_const("gh-identity".to_owned());
    failing
        .expect_mutate_env()
        .returning(|_, _| Err("installation not found".into()));
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    prov.expect_start().never();
    prov.expect_stop().times(1).returning(|_| Ok(()));
    let svc = service(
        provisioning_store(Some("ENV_HOOK_FAILED")),
        Arc::new(prov),
        MockHostResolver::new(),
    )
    .with_env_mutator(Arc::new(failing));
    svc.create(request("hooked"), CreateContext::default())
        .await
        .unwrap();
    svc.drain().await;
}

#[tokio::test]
async fn required_env_is_checked_before_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("needs-key")).unwrap();
    std::fs::write(
        dir.path().join("needs-key/config.yaml"),
        "runtime: claude-code\nruntime_config:\n  model: anthropic/claude\n  required_env: [ANTHROPIC_API_KEY]\n",
    )
    .unwrap();
    let mut prov = MockProvisioner::new();
    prov.expect_kind().return_const(BackendKind::Process);
    prov.expect_start().never();
    prov.expect_stop().times(1).returning(|_| Ok(()));
    let svc = WorkspaceService::new(
        Arc::new(provisioning_store(Some("MISSING_ENV"))),
        Arc::new(prov),
        Arc::new(MockHostResolver::new()),
        TemplateCatalog::load(dir.path()),
        CoreConfig::default(),
    );
    let req = CreateRequest {
        name: "k".into(),
        template: "needs-key".into(),
        ..Default::default()
    };
    svc.create(req, CreateContext::default()).await.unwrap();
    svc.drain().await;
}
