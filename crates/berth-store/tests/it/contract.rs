//! Scenarios written once against the trait and run on both backends.

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::heartbeat::HeartbeatReport;
use berth_domain::runtime::{KNOWN_RUNTIMES, is_external_like};
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_store::{
    Error, EventFilter, Heartbeat, IssueToken, NewEvent, NewIdempotency, NewToken, NewWorkspace,
    Page, Registration, StatusChange, WorkspacePatch,
};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::harness::{Backend, both, new_workspace, secret};

fn new_ws(name: &str) -> NewWorkspace {
    NewWorkspace {
        role: Some("reviewer".into()),
        budget_limit: Some(500),
        canvas: (1.5, -2.0),
        events: vec![NewEvent {
            event_type: EventType::WorkspaceProvisioning,
            payload: json!({"name": name, "tier": 2, "runtime": "claude-code"}),
        }],
        provisioning_started_at: Some(berth_store::now()),
        ..new_workspace(name)
    }
}

both!(
    create_round_trips_every_field,
    names_are_unique_per_parent_among_live_rows,
    unknown_or_removed_parent_writes_nothing,
    secrets_are_sealed_at_rest,
    fault_between_writes_leaves_nothing,
    transitions_are_compare_and_set,
    idempotency_records_are_sealed_and_single_use,
    events_page_by_sequence,
    list_pages_in_creation_order,
    external_like_column_matches_the_domain_predicate,
    workspace_config_upserts,
    tokens_issue_validate_list_revoke,
    register_moves_to_online_only_from_allowed_statuses,
    heartbeats_apply_the_domain_rule,
    a_heartbeat_batch_equals_its_heartbeats_one_by_one,
    lapsed_liveness_moves_by_kind,
    inbound_secret_is_sealed_and_card_updates_record_events,
    provisioned_rows_record_url_and_start_time,
    cascade_remove_and_purge,
    patches_apply_in_one_transaction,
    config_merges_shallowly_and_deletes_nulls,
    hibernation_claim_is_guarded_and_silent,
    hibernation_candidates_follow_activity_not_heartbeats,
    creation_template_round_trips_and_can_change,
    provisioner_urls_are_marked_trusted_and_online_waits_for_them,
);

/// A URL the provisioner reports is marked as the platform's own; a supplied one is not; a
/// workspace whose backend reports URLs is never `online` without one (register or heartbeat);
/// a new start drops the old start's URL.
async fn provisioner_urls_are_marked_trusted_and_online_waits_for_them(b: Backend) {
    let s = b.store();
    let n = new_ws("container");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    let fresh = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (fresh.url.as_deref(), fresh.url_from_provisioner),
        (None, false)
    );

    // Before the provisioner reported: neither register nor heartbeat brings it online.
    let early = Registration {
        url: None,
        require_url: true,
        ..registration("")
    };
    assert!(matches!(
        s.register(id, early.clone()).await,
        Err(Error::InvalidState(WorkspaceStatus::Provisioning))
    ));
    let hb_early = Heartbeat {
        require_url: true,
        ..hb(0.0, "", "")
    };
    let outcome = s.heartbeat(id, hb_early.clone()).await.unwrap();
    assert_eq!(outcome.status, WorkspaceStatus::Provisioning);
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkspaceStatus::Provisioning);

    // The provisioner reports: trusted, and now register brings it online.
    s.set_provisioned(id, Some("http://127.0.0.1:4000".into()), Some("42".into()))
        .await
        .unwrap();
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (w.url.as_deref(), w.url_from_provisioner),
        (Some("http://127.0.0.1:4000"), true)
    );
    // An agent's own idea of its URL never replaces the provisioner's.
    s.register(
        id,
        Registration {
            url: Some("https://elsewhere.example".into()),
            require_url: true,
            ..registration("")
        },
    )
    .await
    .unwrap();
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkspaceStatus::Online);
    assert_eq!(
        (w.url.as_deref(), w.url_from_provisioner),
        (Some("http://127.0.0.1:4000"), true)
    );

    // A restart: the old start's URL goes with it, and the heartbeat of the new agent does not
    // bring it online before the new URL is recorded.
    s.transition(id, StatusChange::new(Transition::Reprovision))
        .await
        .unwrap();
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (w.status, w.url.as_deref(), w.url_from_provisioner),
        (WorkspaceStatus::Provisioning, None, false)
    );
    let outcome = s.heartbeat(id, hb_early).await.unwrap();
    assert_eq!(outcome.status, WorkspaceStatus::Provisioning);
    s.set_provisioned(id, Some("http://127.0.0.1:4001".into()), None)
        .await
        .unwrap();
    let outcome = s
        .heartbeat(
            id,
            Heartbeat {
                require_url: true,
                ..hb(0.0, "", "")
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.status, WorkspaceStatus::Online);

    // A URL supplied at create (a user's) is not trusted, and a start that reports none keeps
    // it untrusted; an external workspace needs no URL to come online.
    let mut supplied = new_ws("supplied");
    supplied.url = Some("https://agent.example".into());
    let sid = supplied.id;
    s.create_workspace(supplied).await.unwrap();
    s.set_provisioned(sid, None, Some("i-1".into()))
        .await
        .unwrap();
    let w = s.get_workspace(sid).await.unwrap().unwrap();
    assert_eq!(
        (w.url.as_deref(), w.url_from_provisioner),
        (Some("https://agent.example"), false)
    );
    let mut ext = new_ws("ext");
    ext.runtime = "external".into();
    ext.status = WorkspaceStatus::AwaitingAgent;
    let eid = ext.id;
    s.create_workspace(ext).await.unwrap();
    s.register(eid, early).await.unwrap();
    assert_eq!(
        s.get_workspace(eid).await.unwrap().unwrap().status,
        WorkspaceStatus::Online
    );
}

async fn creation_template_round_trips_and_can_change(b: Backend) {
    let s = b.store();
    let mut with = new_ws("templated");
    with.template = Some("echo".into());
    let with_id = with.id;
    s.create_workspace(with).await.unwrap();
    let without = new_ws("plain");
    let without_id = without.id;
    s.create_workspace(without).await.unwrap();

    assert_eq!(
        s.workspace_template(with_id).await.unwrap().as_deref(),
        Some("echo")
    );
    assert_eq!(s.workspace_template(without_id).await.unwrap(), None);
    assert_eq!(
        s.workspace_template(WorkspaceId::new_v4()).await.unwrap(),
        None
    );

    // A restart's explicit choice replaces it; only the named row changes.
    assert!(
        s.set_workspace_template(without_id, Some("plain-tpl".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.workspace_template(without_id).await.unwrap().as_deref(),
        Some("plain-tpl")
    );
    assert_eq!(
        s.workspace_template(with_id).await.unwrap().as_deref(),
        Some("echo")
    );
    assert!(s.set_workspace_template(with_id, None).await.unwrap());
    assert_eq!(s.workspace_template(with_id).await.unwrap(), None);
    assert!(
        !s.set_workspace_template(WorkspaceId::new_v4(), Some("echo".into()))
            .await
            .unwrap()
    );
}

async fn create_round_trips_every_field(b: Backend) {
    let s = b.store();
    let mut n = new_ws("alpha");
    n.compute = json!({"instance_type": "t3.large"});
    n.workspace_dir = Some("/home/me/src".into());
    n.workspace_access = "read_only".into();
    n.delivery_mode = "poll".into();
    n.max_concurrent_tasks = 4;
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    let w = s.get_workspace(id).await.unwrap().expect("row");
    assert_eq!(w.id, id);
    assert_eq!(w.name, "alpha");
    assert_eq!(w.role.as_deref(), Some("reviewer"));
    assert_eq!(w.tier, 2);
    assert_eq!(w.status, WorkspaceStatus::Provisioning);
    assert_eq!(w.runtime, "claude-code");
    assert_eq!((w.x, w.y, w.collapsed), (1.5, -2.0, false));
    assert_eq!(w.budget_limit, Some(500));
    assert_eq!(w.monthly_spend, 0);
    assert_eq!(w.compute, json!({"instance_type": "t3.large"}));
    assert_eq!(w.workspace_dir.as_deref(), Some("/home/me/src"));
    assert_eq!(w.workspace_access, "read_only");
    assert_eq!(w.delivery_mode, "poll");
    assert_eq!(w.max_concurrent_tasks, 4);
    assert_eq!(w.agent_card, None);
    assert!(!w.broadcast_enabled);
    assert!(w.talk_to_user_enabled);
    assert_eq!(w.last_outbound_at, None);
    let list = s.list_workspaces(Page::default()).await.unwrap();
    assert_eq!(list, vec![w]);
    assert!(
        s.get_workspace(WorkspaceId::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    let events = s.events(EventFilter::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "WORKSPACE_PROVISIONING");
    assert_eq!(events[0].workspace_id, Some(id));
}

async fn names_are_unique_per_parent_among_live_rows(b: Backend) {
    let s = b.store();
    let root = new_ws("dup");
    let root_id = root.id;
    s.create_workspace(root).await.unwrap();
    assert!(matches!(
        s.create_workspace(new_ws("dup")).await,
        Err(Error::NameTaken)
    ));
    assert_eq!(b.count("workspaces").await, 1);
    let cands = vec!["dup".to_owned(), "dup (2)".to_owned()];
    assert_eq!(
        s.taken_names(None, cands.clone()).await.unwrap(),
        vec!["dup".to_owned()]
    );
    // The same name under a parent is a different bucket.
    let mut child = new_ws("dup");
    child.parent_id = Some(root_id);
    let child_id = child.id;
    s.create_workspace(child).await.unwrap();
    assert_eq!(
        s.taken_names(Some(root_id), cands.clone()).await.unwrap(),
        vec!["dup".to_owned()]
    );
    // Removed rows free their name.
    assert!(
        s.transition(child_id, StatusChange::new(Transition::Removed))
            .await
            .unwrap()
    );
    assert!(
        s.taken_names(Some(root_id), cands)
            .await
            .unwrap()
            .is_empty()
    );
    let mut again = new_ws("dup");
    again.parent_id = Some(root_id);
    s.create_workspace(again).await.unwrap();
}

async fn unknown_or_removed_parent_writes_nothing(b: Backend) {
    let s = b.store();
    let mut orphan = new_ws("orphan");
    orphan.parent_id = Some(WorkspaceId::new_v4());
    orphan.secrets = vec![("K".into(), secret("v"))];
    assert!(matches!(
        s.create_workspace(orphan).await,
        Err(Error::ParentNotFound)
    ));
    let parent = new_ws("parent");
    let pid = parent.id;
    s.create_workspace(parent).await.unwrap();
    s.transition(pid, StatusChange::new(Transition::Removed))
        .await
        .unwrap();
    let mut child = new_ws("child");
    child.parent_id = Some(pid);
    assert!(matches!(
        s.create_workspace(child).await,
        Err(Error::ParentNotFound)
    ));
    assert_eq!(b.count("workspaces").await, 1);
    assert_eq!(b.count("workspace_secrets").await, 0);
    assert_eq!(b.count("canvas_layouts").await, 1);
}

async fn secrets_are_sealed_at_rest(b: Backend) {
    let s = b.store();
    let mut n = new_ws("sealed");
    n.secrets = vec![
        ("OPENAI_API_KEY".into(), secret("sk-very-secret-value-123")),
        ("MODEL".into(), secret("openai/gpt-5")),
    ];
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    for blob in b.raw_secret_blobs().await {
        let text = String::from_utf8_lossy(&blob);
        assert!(
            !text.contains("very-secret") && !text.contains("gpt-5"),
            "plaintext at rest"
        );
    }
    let got = s.workspace_secrets(id).await.unwrap();
    let got: Vec<(String, String)> = got
        .into_iter()
        .map(|(k, v)| (k, v.expose_secret().to_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("MODEL".to_owned(), "openai/gpt-5".to_owned()),
            (
                "OPENAI_API_KEY".to_owned(),
                "sk-very-secret-value-123".to_owned()
            ),
        ]
    );
}

async fn fault_between_writes_leaves_nothing(b: Backend) {
    // A real database fault in the middle of the create: the layout insert (after the row and
    // the secrets were written) raises.
    if b.is_postgres() {
        b.exec(
            "CREATE FUNCTION berth_fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER berth_fail BEFORE INSERT ON canvas_layouts FOR EACH ROW EXECUTE FUNCTION berth_fail();",
        )
        .await;
    } else {
        b.exec(
            "CREATE TRIGGER berth_fail BEFORE INSERT ON canvas_layouts BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
        )
        .await;
    }
    let s = b.store();
    let mut n = new_ws("doomed");
    n.secrets = vec![("K".into(), secret("v"))];
    n.token = Some(NewToken {
        id: uuid::Uuid::new_v4(),
        hash: [7; 32],
        prefix: "abcdefgh".into(),
    });
    let err = s.create_workspace(n).await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    for table in [
        "workspaces",
        "workspace_secrets",
        "canvas_layouts",
        "workspace_auth_tokens",
        "structure_events",
        "idempotency_keys",
    ] {
        assert_eq!(b.count(table).await, 0, "{table} kept a partial write");
    }
}

async fn transitions_are_compare_and_set(b: Backend) {
    let s = b.store();
    let n = new_ws("cas");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    let fail = StatusChange {
        transition: Transition::ProvisionFailed,
        payload: json!({"error": "boom", "code": "NO_BACKEND"}),
        failure: Some(("NO_BACKEND".into(), "boom".into())),
    };
    assert!(s.transition(id, fail.clone()).await.unwrap());
    assert!(
        !s.transition(id, fail).await.unwrap(),
        "a second fail must not change the row"
    );
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkspaceStatus::Failed);
    assert_eq!(w.failure_code.as_deref(), Some("NO_BACKEND"));
    assert_eq!(w.last_sample_error.as_deref(), Some("boom"));
    let evs = s
        .events(EventFilter {
            workspace_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = evs.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        names,
        ["WORKSPACE_PROVISIONING", "WORKSPACE_PROVISION_FAILED"]
    );
    assert_eq!(
        evs[1].payload,
        json!({"error": "boom", "code": "NO_BACKEND"})
    );
    // Register cannot revive a failed row.
    assert!(
        !s.transition(id, StatusChange::new(Transition::AgentRegistered))
            .await
            .unwrap()
    );
    // Unknown id: no change, no event.
    assert!(
        !s.transition(
            WorkspaceId::new_v4(),
            StatusChange::new(Transition::Removed)
        )
        .await
        .unwrap()
    );
    assert_eq!(b.count("structure_events").await, 2);
}

async fn idempotency_records_are_sealed_and_single_use(b: Backend) {
    let s = b.store();
    let body = r#"{"id":"x","connection":{"auth_token":"tok-plaintext-123"}}"#;
    let mut n = new_ws("idem");
    let id = n.id;
    n.idempotency = Some(NewIdempotency {
        key: "key-1".into(),
        request_hash: [1; 32],
        status: 201,
        body: secret(body),
    });
    s.create_workspace(n).await.unwrap();
    let rec = s.idempotent_create("key-1").await.unwrap().expect("stored");
    assert_eq!(rec.workspace_id, id);
    assert_eq!(rec.status, 201);
    assert_eq!(rec.request_hash, [1; 32]);
    assert_eq!(rec.body.expose_secret(), body);
    assert!(s.idempotent_create("key-2").await.unwrap().is_none());
    let mut again = new_ws("idem-2");
    again.idempotency = Some(NewIdempotency {
        key: "key-1".into(),
        request_hash: [1; 32],
        status: 201,
        body: secret("{}"),
    });
    assert!(matches!(
        s.create_workspace(again).await,
        Err(Error::IdempotencyKeyUsed)
    ));
    assert_eq!(b.count("workspaces").await, 1);
    assert_eq!(
        s.prune_idempotency(berth_store::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(s.idempotent_create("key-1").await.unwrap().is_none());
}

async fn events_page_by_sequence(b: Backend) {
    let s = b.store();
    let mut ids = vec![];
    for i in 0..3 {
        let n = new_ws(&format!("ev-{i}"));
        ids.push(n.id);
        s.create_workspace(n).await.unwrap();
    }
    let all = s.events(EventFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let after = s
        .events(EventFilter {
            after_seq: Some(all[0].seq),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after, all[1..].to_vec());
    let one = s
        .events(EventFilter {
            workspace_id: Some(ids[2]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one, vec![all[2].clone()]);
    let limited = s
        .events(EventFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, all[..2].to_vec());
    let none = s
        .events(EventFilter {
            workspace_id: Some(ids[0]),
            after_seq: Some(all[0].seq),
            limit: Some(10),
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn list_pages_in_creation_order(b: Backend) {
    let s = b.store();
    let mut ids = vec![];
    for i in 0..5 {
        let n = new_ws(&format!("p{i}"));
        ids.push(n.id);
        s.create_workspace(n).await.unwrap();
    }
    s.transition(ids[1], StatusChange::new(Transition::Removed))
        .await
        .unwrap();
    let all = s.list_workspaces(Page::default()).await.unwrap();
    let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["p0", "p2", "p3", "p4"]);
    let first = s
        .list_workspaces(Page {
            after: None,
            limit: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(first, all[..2].to_vec());
    let last = &first[1];
    let rest = s
        .list_workspaces(Page {
            after: Some((last.created_at, last.id)),
            limit: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(rest, all[2..].to_vec());
    // Removed rows stay readable by id.
    assert_eq!(
        s.get_workspace(ids[1]).await.unwrap().unwrap().status,
        WorkspaceStatus::Removed
    );
}

async fn external_like_column_matches_the_domain_predicate(b: Backend) {
    let s = b.store();
    for (i, runtime) in KNOWN_RUNTIMES
        .iter()
        .chain(["External", "kimi-cli2", "echo"].iter())
        .enumerate()
    {
        let mut n = new_ws(&format!("rt-{i}"));
        n.runtime = (*runtime).to_owned();
        let id = n.id;
        s.create_workspace(n).await.unwrap();
        assert_eq!(
            b.external_like(id.into()).await,
            is_external_like(runtime),
            "{runtime}"
        );
    }
}

async fn workspace_config_upserts(b: Backend) {
    let s = b.store();
    let n = new_ws("cfg");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    assert_eq!(s.workspace_config(id).await.unwrap(), None);
    s.put_workspace_config(id, json!({"name": "cfg", "tier": 2}))
        .await
        .unwrap();
    s.put_workspace_config(id, json!({"name": "cfg", "tier": 3}))
        .await
        .unwrap();
    assert_eq!(
        s.workspace_config(id).await.unwrap(),
        Some(json!({"name": "cfg", "tier": 3}))
    );
}

fn token(n: u8) -> NewToken {
    NewToken {
        id: uuid::Uuid::new_v4(),
        hash: [n; 32],
        prefix: format!("prefix{n:02}"),
    }
}

async fn tokens_issue_validate_list_revoke(b: Backend) {
    let s = b.store();
    let a = new_ws("a");
    let (aid, bid) = (a.id, WorkspaceId::new_v4());
    s.create_workspace(a).await.unwrap();
    assert!(!s.has_live_token(aid).await.unwrap());
    s.issue_token(aid, token(1), IssueToken::default())
        .await
        .unwrap();
    s.issue_token(aid, token(2), IssueToken::default())
        .await
        .unwrap();
    assert!(s.has_live_token(aid).await.unwrap());
    assert_eq!(s.validate_token([1; 32]).await.unwrap(), Some(aid));
    assert_eq!(s.validate_token([9; 32]).await.unwrap(), None);
    let listed = s.list_tokens(aid, 50, 0).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|t| t.prefix == "prefix01" && t.last_used_at.is_some()),
        "validate touched last_used_at"
    );
    assert_eq!(s.list_tokens(aid, 1, 1).await.unwrap().len(), 1);
    // Cap.
    let capped = IssueToken {
        max_live: Some(2),
        ..Default::default()
    };
    assert!(matches!(
        s.issue_token(aid, token(3), capped).await,
        Err(Error::TooManyTokens)
    ));
    // Unknown workspace.
    assert!(matches!(
        s.issue_token(bid, token(4), IssueToken::default()).await,
        Err(Error::NotFound)
    ));
    // Revoke one, then rotate (revoke all + issue) with an event.
    assert!(s.revoke_token(aid, listed[0].id).await.unwrap());
    assert!(!s.revoke_token(aid, listed[0].id).await.unwrap());
    let rotate = IssueToken {
        revoke_existing: true,
        max_live: None,
        event: Some(NewEvent {
            event_type: EventType::ExternalCredentialsRotated,
            payload: json!({"workspace_id": aid}),
        }),
    };
    s.issue_token(aid, token(5), rotate).await.unwrap();
    assert_eq!(s.validate_token([1; 32]).await.unwrap(), None);
    assert_eq!(s.validate_token([2; 32]).await.unwrap(), None);
    assert_eq!(s.validate_token([5; 32]).await.unwrap(), Some(aid));
    assert_eq!(s.list_tokens(aid, 50, 0).await.unwrap().len(), 1);
    let evs = s
        .events(EventFilter {
            workspace_id: Some(aid),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        evs.last().unwrap().event_type,
        "EXTERNAL_CREDENTIALS_ROTATED"
    );
    // A removed workspace's tokens stop working.
    s.transition(aid, StatusChange::new(Transition::Removed))
        .await
        .unwrap();
    assert_eq!(s.validate_token([5; 32]).await.unwrap(), None);
    assert_eq!(s.revoke_tokens(aid).await.unwrap(), 1);
}

fn registration(url: &str) -> Registration {
    Registration {
        url: Some(url.to_owned()),
        agent_card: json!({"name": "agent"}),
        delivery_mode: "push".into(),
        event_payload: json!({"url": url}),
        require_url: false,
    }
}

async fn register_moves_to_online_only_from_allowed_statuses(b: Backend) {
    let s = b.store();
    let mut n = new_ws("reg");
    n.status = WorkspaceStatus::AwaitingAgent;
    n.runtime = "external".into();
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    s.register(id, registration("https://agent.example/a2a"))
        .await
        .unwrap();
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(w.status, WorkspaceStatus::Online);
    assert_eq!(w.url.as_deref(), Some("https://agent.example/a2a"));
    assert_eq!(w.agent_card, Some(json!({"name": "agent"})));
    // Poll re-register without URL keeps the stored one.
    s.register(
        id,
        Registration {
            url: None,
            delivery_mode: "poll".into(),
            ..registration("")
        },
    )
    .await
    .unwrap();
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (w.url.as_deref(), w.delivery_mode.as_str()),
        (Some("https://agent.example/a2a"), "poll")
    );
    // Failed, paused, removed rows are not revived.
    let fail = StatusChange {
        transition: Transition::Paused,
        payload: json!({}),
        failure: None,
    };
    s.transition(id, fail).await.unwrap();
    assert!(matches!(
        s.register(id, registration("https://x.example")).await,
        Err(Error::InvalidState(WorkspaceStatus::Paused))
    ));
    assert_eq!(
        s.get_workspace(id).await.unwrap().unwrap().status,
        WorkspaceStatus::Paused
    );
    assert!(matches!(
        s.register(WorkspaceId::new_v4(), registration("https://x.example"))
            .await,
        Err(Error::NotFound)
    ));
    let evs = s
        .events(EventFilter {
            workspace_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        evs.iter()
            .filter(|e| e.event_type == "WORKSPACE_ONLINE")
            .count(),
        2
    );
    // A container workspace keeps the URL its provisioner recorded.
    let c = new_ws("container");
    let cid = c.id;
    s.create_workspace(c).await.unwrap();
    s.set_provisioned(cid, Some("http://127.0.0.1:4242".into()), None)
        .await
        .unwrap();
    s.register(cid, registration("http://ws-internal:8000"))
        .await
        .unwrap();
    assert_eq!(
        s.get_workspace(cid).await.unwrap().unwrap().url.as_deref(),
        Some("http://127.0.0.1:4242")
    );
}

fn hb(rate: f64, state: &str, task: &str) -> Heartbeat {
    Heartbeat {
        error_rate: rate,
        sample_error: "boom".into(),
        active_tasks: 1,
        uptime_seconds: 60,
        current_task: task.into(),
        monthly_spend: Some(250),
        report: HeartbeatReport {
            error_rate: rate,
            sample_error: "boom".into(),
            runtime_state: state.into(),
            status_mgmt: false,
        },
        require_url: false,
    }
}

async fn heartbeats_apply_the_domain_rule(b: Backend) {
    let s = b.store();
    let n = new_ws("hb");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    let o = s.heartbeat(id, hb(0.0, "", "t1")).await.unwrap();
    assert_eq!(
        (o.previous_status, o.status, o.task_changed),
        (WorkspaceStatus::Provisioning, WorkspaceStatus::Online, true)
    );
    let o = s.heartbeat(id, hb(0.7, "", "t1")).await.unwrap();
    assert_eq!(
        (o.status, o.task_changed),
        (WorkspaceStatus::Degraded, false)
    );
    let o = s.heartbeat(id, hb(0.05, "", "t1")).await.unwrap();
    assert_eq!(o.status, WorkspaceStatus::Online);
    let o = s.heartbeat(id, hb(0.0, "wedged", "t1")).await.unwrap();
    assert_eq!(o.status, WorkspaceStatus::Degraded);
    let w = s.get_workspace(id).await.unwrap().unwrap();
    assert_eq!(
        (w.active_tasks, w.uptime_seconds, w.monthly_spend),
        (1, 60, 250)
    );
    assert_eq!(w.current_task.as_deref(), Some("t1"));
    assert_eq!(w.last_sample_error.as_deref(), Some("boom"));
    let names: Vec<String> = s
        .events(EventFilter {
            workspace_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        names,
        [
            "WORKSPACE_PROVISIONING",
            "TASK_UPDATED",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED"
        ]
    );
    // Paused: fields update, status does not.
    s.transition(id, StatusChange::new(Transition::Paused))
        .await
        .unwrap();
    let o = s.heartbeat(id, hb(0.0, "", "t2")).await.unwrap();
    assert_eq!(o.status, WorkspaceStatus::Paused);
    s.transition(id, StatusChange::new(Transition::Removed))
        .await
        .unwrap();
    assert!(matches!(
        s.heartbeat(id, hb(0.0, "", "")).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        s.heartbeat(WorkspaceId::new_v4(), hb(0.0, "", "")).await,
        Err(Error::NotFound)
    ));
}

/// A batch (one transaction) gives each heartbeat the outcome, the events (in order, per
/// workspace) and the final row that the same heartbeats applied one by one give; a missing
/// workspace fails only its own heartbeat; the spend is the last one reported.
async fn a_heartbeat_batch_equals_its_heartbeats_one_by_one(b: Backend) {
    let s = b.store();
    let no_spend = |h: Heartbeat| Heartbeat {
        monthly_spend: None,
        ..h
    };
    // Per workspace: online with a task, degraded, recovered with a new task (no spend: the
    // earlier 250 stays), wedged; the other workspace interleaved.
    let script = |a: WorkspaceId, b: WorkspaceId, missing: WorkspaceId| {
        vec![
            (a, hb(0.0, "", "t1")),
            (b, hb(0.0, "", "x")),
            (missing, hb(0.0, "", "")),
            (a, hb(0.7, "", "t1")),
            (a, no_spend(hb(0.05, "", "t2"))),
            (b, hb(0.0, "wedged", "x")),
            (a, no_spend(hb(0.0, "wedged", "t2"))),
        ]
    };
    let mut ids = Vec::new();
    for name in ["batch-a", "batch-b", "one-a", "one-b"] {
        let n = new_ws(name);
        ids.push(n.id);
        s.create_workspace(n).await.unwrap();
    }
    let missing = WorkspaceId::new_v4();
    let batched = s
        .heartbeats(script(ids[0], ids[1], missing))
        .await
        .expect("the batch commits");
    let mut one_by_one = Vec::new();
    for (id, beat) in script(ids[2], ids[3], missing) {
        one_by_one.push(s.heartbeat(id, beat).await);
    }
    assert_eq!(batched.len(), 7);
    let summary = |r: &Result<berth_store::HeartbeatOutcome, Error>| match r {
        Ok(o) => format!(
            "{}->{} task_changed={} secret={}",
            o.previous_status,
            o.status,
            o.task_changed,
            o.inbound_secret.is_some()
        ),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(
        batched.iter().map(summary).collect::<Vec<_>>(),
        one_by_one.iter().map(summary).collect::<Vec<_>>()
    );
    assert_eq!(summary(&batched[2]), "error: workspace not found");
    assert_eq!(
        summary(&batched[6]),
        "online->degraded task_changed=false secret=false"
    );
    let events_of = async |id| -> Vec<(String, serde_json::Value)> {
        s.events(EventFilter {
            workspace_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.payload))
        .collect()
    };
    let names = |evs: &[(String, serde_json::Value)]| {
        evs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    };
    let batch_a = events_of(ids[0]).await;
    assert_eq!(
        names(&batch_a),
        [
            "WORKSPACE_PROVISIONING",
            "TASK_UPDATED",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED",
            "TASK_UPDATED",
            "WORKSPACE_ONLINE",
            "WORKSPACE_DEGRADED"
        ]
    );
    assert_eq!(batch_a[4].1["current_task"], "t2");
    assert_eq!(names(&batch_a)[1..], names(&events_of(ids[2]).await)[1..]);
    assert_eq!(
        names(&events_of(ids[1]).await),
        names(&events_of(ids[3]).await)
    );
    for (batch, single) in [(ids[0], ids[2]), (ids[1], ids[3])] {
        let (w, v) = (
            s.get_workspace(batch).await.unwrap().unwrap(),
            s.get_workspace(single).await.unwrap().unwrap(),
        );
        assert_eq!(
            (
                w.status,
                w.current_task.clone(),
                w.last_error_rate,
                w.monthly_spend,
                w.active_tasks
            ),
            (
                v.status,
                v.current_task,
                v.last_error_rate,
                v.monthly_spend,
                v.active_tasks
            )
        );
        assert!(w.last_heartbeat_at.is_some());
    }
    let a = s.get_workspace(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (a.monthly_spend, a.current_task.as_deref()),
        (250, Some("t2"))
    );
    // An empty batch is no transaction and no error.
    assert!(s.heartbeats(Vec::new()).await.unwrap().is_empty());
}

async fn lapsed_liveness_moves_by_kind(b: Backend) {
    let s = b.store();
    let c = new_ws("container");
    let mut e = new_ws("external");
    e.runtime = "kimi".into();
    let (cid, eid) = (c.id, e.id);
    s.create_workspace(c).await.unwrap();
    s.create_workspace(e).await.unwrap();
    s.heartbeat(cid, hb(0.0, "", "")).await.unwrap();
    s.heartbeat(eid, hb(0.0, "", "")).await.unwrap();
    let past = berth_store::now() - chrono::Duration::seconds(3600);
    assert!(
        s.mark_lapsed(past, past).await.unwrap().is_empty(),
        "fresh heartbeats are live"
    );
    let future = berth_store::now() + chrono::Duration::seconds(1);
    let mut lapsed = s.mark_lapsed(future, future).await.unwrap();
    lapsed.sort_by_key(|l| l.id == eid);
    assert_eq!(lapsed.len(), 2);
    assert_eq!(
        (lapsed[0].id, lapsed[0].status),
        (cid, WorkspaceStatus::Offline)
    );
    assert_eq!(
        (lapsed[1].id, lapsed[1].status),
        (eid, WorkspaceStatus::AwaitingAgent)
    );
    assert!(
        s.mark_lapsed(future, future).await.unwrap().is_empty(),
        "a second sweep changes nothing"
    );
    let evs: Vec<String> = s
        .events(EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(
        evs.contains(&"WORKSPACE_OFFLINE".to_owned())
            && evs.contains(&"WORKSPACE_AWAITING_AGENT".to_owned())
    );
    // Recovery by heartbeat.
    assert_eq!(
        s.heartbeat(cid, hb(0.0, "", "")).await.unwrap().status,
        WorkspaceStatus::Online
    );
    assert_eq!(
        s.heartbeat(eid, hb(0.0, "", "")).await.unwrap().status,
        WorkspaceStatus::Online
    );
}

async fn inbound_secret_is_sealed_and_card_updates_record_events(b: Backend) {
    let s = b.store();
    let n = new_ws("sec");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    assert!(s.inbound_secret(id).await.unwrap().is_none());
    s.set_inbound_secret(id, secret("inbound-123"))
        .await
        .unwrap();
    assert_eq!(
        s.inbound_secret(id).await.unwrap().unwrap().expose_secret(),
        "inbound-123"
    );
    assert!(matches!(
        s.set_inbound_secret(WorkspaceId::new_v4(), secret("x"))
            .await,
        Err(Error::NotFound)
    ));
    s.update_card(id, json!({"name": "new"})).await.unwrap();
    assert_eq!(
        s.get_workspace(id).await.unwrap().unwrap().agent_card,
        Some(json!({"name": "new"}))
    );
    assert!(matches!(
        s.update_card(WorkspaceId::new_v4(), json!({})).await,
        Err(Error::NotFound)
    ));
    let h = s.hierarchy().await.unwrap();
    assert_eq!(h, vec![(id, None)]);
}

async fn provisioned_rows_record_url_and_start_time(b: Backend) {
    let s = b.store();
    let n = new_ws("prov");
    let (id, started) = (n.id, n.provisioning_started_at);
    s.create_workspace(n).await.unwrap();
    let rows = s.provisioning().await.unwrap();
    assert_eq!(rows, vec![(id, "claude-code".to_owned(), started)]);
    s.set_provisioned(
        id,
        Some("http://127.0.0.1:4000".into()),
        Some("pid-1".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_workspace(id).await.unwrap().unwrap().url.as_deref(),
        Some("http://127.0.0.1:4000")
    );
    // A later None keeps what is stored.
    s.set_provisioned(id, None, None).await.unwrap();
    assert_eq!(
        s.get_workspace(id).await.unwrap().unwrap().url.as_deref(),
        Some("http://127.0.0.1:4000")
    );
    assert!(matches!(
        s.set_provisioned(WorkspaceId::new_v4(), None, None).await,
        Err(Error::NotFound)
    ));
    s.heartbeat(id, hb(0.0, "", "")).await.unwrap();
    assert!(s.provisioning().await.unwrap().is_empty());

    // A start that a hibernation overtook does not put its URL back on the row the hibernation
    // cleared (a wake's agent would be sent to the stopped one's port).
    assert!(s.claim_hibernation(id, false).await.unwrap());
    s.transition(id, StatusChange::new(Transition::Hibernated))
        .await
        .unwrap();
    assert_eq!(s.get_workspace(id).await.unwrap().unwrap().url, None);
    assert!(matches!(
        s.set_provisioned(id, Some("http://127.0.0.1:4001".into()), None)
            .await,
        Err(Error::NotFound)
    ));
    assert_eq!(s.get_workspace(id).await.unwrap().unwrap().url, None);
}

async fn cascade_remove_and_purge(b: Backend) {
    let s = b.store();
    let root = new_ws("root");
    let rid = root.id;
    s.create_workspace(root).await.unwrap();
    let mut child = new_ws("child");
    child.parent_id = Some(rid);
    let cid = child.id;
    s.create_workspace(child).await.unwrap();
    let mut grandchild = new_ws("grandchild");
    grandchild.parent_id = Some(cid);
    grandchild.secrets = vec![("K".into(), secret("v"))];
    let gid = grandchild.id;
    s.create_workspace(grandchild).await.unwrap();
    s.issue_token(gid, token(7), IssueToken::default())
        .await
        .unwrap();
    assert_eq!(s.live_descendants(rid).await.unwrap(), vec![cid, gid]);
    assert_eq!(s.remove_workspaces(rid, vec![cid, gid]).await.unwrap(), 3);
    for id in [rid, cid, gid] {
        assert_eq!(
            s.get_workspace(id).await.unwrap().unwrap().status,
            WorkspaceStatus::Removed
        );
    }
    assert_eq!(s.validate_token([7; 32]).await.unwrap(), None);
    assert_eq!(b.count("canvas_layouts").await, 0);
    assert!(s.live_descendants(rid).await.unwrap().is_empty());
    let removed: Vec<serde_json::Value> = s
        .events(EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "WORKSPACE_REMOVED")
        .map(|e| e.payload)
        .collect();
    assert_eq!(
        removed,
        vec![json!({}), json!({}), json!({"cascade_deleted": 2})]
    );
    // Removing again changes nothing and records nothing.
    assert_eq!(s.remove_workspaces(rid, vec![]).await.unwrap(), 0);
    s.purge_workspaces(vec![gid, cid, rid]).await.unwrap();
    for table in [
        "workspaces",
        "workspace_secrets",
        "workspace_auth_tokens",
        "canvas_layouts",
    ] {
        assert_eq!(b.count(table).await, 0, "{table}");
    }
    assert!(
        b.count("structure_events").await > 0,
        "the event log keeps its history"
    );
}

async fn patches_apply_in_one_transaction(b: Backend) {
    let s = b.store();
    let a = new_ws("a");
    let other = new_ws("b");
    let (aid, bid) = (a.id, other.id);
    s.create_workspace(a).await.unwrap();
    s.create_workspace(other).await.unwrap();
    let patch = WorkspacePatch {
        name: Some("renamed".into()),
        role: Some(None),
        tier: Some(4),
        runtime: Some("hermes".into()),
        workspace_dir: Some(Some("/srv/x".into())),
        hibernation_idle_minutes: Some(Some(30)),
        position: Some((10.0, 20.0)),
        collapsed: Some(true),
        parent_id: Some(Some(bid)),
        budget_limit: Some(Some(1234)),
        broadcast_enabled: Some(true),
        talk_to_user_enabled: Some(false),
    };
    s.update_workspace(aid, patch).await.unwrap();
    let w = s.get_workspace(aid).await.unwrap().unwrap();
    assert_eq!(
        (w.budget_limit, w.broadcast_enabled, w.talk_to_user_enabled),
        (Some(1234), true, false)
    );
    let unlimited = WorkspacePatch {
        budget_limit: Some(None),
        ..Default::default()
    };
    s.update_workspace(aid, unlimited).await.unwrap();
    let w = s.get_workspace(aid).await.unwrap().unwrap();
    assert_eq!(
        (w.budget_limit, w.broadcast_enabled, w.talk_to_user_enabled),
        (None, true, false),
        "fields the patch leaves out stay"
    );
    let w = s.get_workspace(aid).await.unwrap().unwrap();
    assert_eq!(
        (w.name.as_str(), w.role.clone(), w.tier, w.runtime.as_str()),
        ("renamed", None, 4, "hermes")
    );
    assert_eq!(
        (w.x, w.y, w.collapsed, w.parent_id),
        (10.0, 20.0, true, Some(bid))
    );
    assert_eq!(w.workspace_dir.as_deref(), Some("/srv/x"));
    // A sibling's name: refused, and nothing of the patch applies.
    let mut c = new_ws("taken");
    c.parent_id = Some(bid);
    s.create_workspace(c).await.unwrap();
    let clash = WorkspacePatch {
        tier: Some(1),
        name: Some("taken".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.update_workspace(aid, clash).await,
        Err(Error::NameTaken)
    ));
    assert_eq!(s.get_workspace(aid).await.unwrap().unwrap().tier, 4);
    let orphan = WorkspacePatch {
        parent_id: Some(Some(WorkspaceId::new_v4())),
        ..Default::default()
    };
    assert!(matches!(
        s.update_workspace(aid, orphan).await,
        Err(Error::ParentNotFound)
    ));
    let root = WorkspacePatch {
        parent_id: Some(None),
        ..Default::default()
    };
    s.update_workspace(aid, root).await.unwrap();
    assert_eq!(s.get_workspace(aid).await.unwrap().unwrap().parent_id, None);
    assert!(matches!(
        s.update_workspace(WorkspaceId::new_v4(), WorkspacePatch::default())
            .await,
        Err(Error::NotFound)
    ));
}

async fn config_merges_shallowly_and_deletes_nulls(b: Backend) {
    let s = b.store();
    let n = new_ws("cfg-merge");
    let id = n.id;
    s.create_workspace(n).await.unwrap();
    let obj = |v: serde_json::Value| v.as_object().expect("object").clone();

    let first = s
        .merge_workspace_config(id, obj(json!({"a": 1, "b": {"x": 1}, "keep": true})))
        .await
        .unwrap();
    assert_eq!(first, json!({"a": 1, "b": {"x": 1}, "keep": true}));
    // Shallow: `b` is replaced, not merged; `a: null` deletes `a`.
    let merged = s
        .merge_workspace_config(id, obj(json!({"b": {"y": 2}, "a": null, "c": "z"})))
        .await
        .unwrap();
    let expected = json!({"b": {"y": 2}, "c": "z", "keep": true});
    assert_eq!(merged, expected);
    assert_eq!(s.workspace_config(id).await.unwrap(), Some(expected));

    // A stored document that is not an object (the reference could write one) is replaced.
    s.put_workspace_config(id, json!([1, 2])).await.unwrap();
    assert_eq!(
        s.merge_workspace_config(id, obj(json!({"k": 1})))
            .await
            .unwrap(),
        json!({"k": 1})
    );

    // Concurrent merges of different keys: each read-modify-write sees the one before.
    let m = |k: &str| obj(json!({ k: k }));
    let (r1, r2, r3, r4) = tokio::join!(
        s.merge_workspace_config(id, m("p")),
        s.merge_workspace_config(id, m("q")),
        s.merge_workspace_config(id, m("r")),
        s.merge_workspace_config(id, m("t")),
    );
    for r in [r1, r2, r3, r4] {
        r.unwrap();
    }
    assert_eq!(
        s.workspace_config(id).await.unwrap(),
        Some(json!({"k": 1, "p": "p", "q": "q", "r": "r", "t": "t"})),
        "no merge lost another's key"
    );

    // Unknown and removed workspaces: NotFound, and nothing written.
    let rows = b.count("workspace_config").await;
    assert!(matches!(
        s.merge_workspace_config(WorkspaceId::new_v4(), m("x"))
            .await,
        Err(Error::NotFound)
    ));
    let gone = new_ws("cfg-gone");
    let gid = gone.id;
    s.create_workspace(gone).await.unwrap();
    s.remove_workspaces(gid, vec![]).await.unwrap();
    assert!(matches!(
        s.merge_workspace_config(gid, m("x")).await,
        Err(Error::NotFound)
    ));
    assert_eq!(b.count("workspace_config").await, rows);
    assert_eq!(s.workspace_config(gid).await.unwrap(), None);
}

/// A heartbeat with no active tasks and no task change.
fn idle_hb() -> Heartbeat {
    Heartbeat {
        active_tasks: 0,
        ..hb(0.0, "", "")
    }
}

async fn hibernation_claim_is_guarded_and_silent(b: Backend) {
    let s = b.store();
    let busy = new_ws("busy");
    let idle = new_ws("idle");
    let (bid, iid) = (busy.id, idle.id);
    s.create_workspace(busy).await.unwrap();
    s.create_workspace(idle).await.unwrap();
    // Only online/degraded rows can be claimed.
    assert!(!s.claim_hibernation(bid, false).await.unwrap());
    for id in [bid, iid] {
        assert!(
            s.transition(id, StatusChange::new(Transition::AgentRegistered))
                .await
                .unwrap()
        );
        s.set_provisioned(id, Some("http://10.0.0.9:8000".into()), None)
            .await
            .unwrap();
    }
    s.heartbeat(bid, hb(0.0, "", "")).await.unwrap(); // active_tasks = 1
    s.heartbeat(iid, idle_hb()).await.unwrap();
    let events_before = b.count("structure_events").await;

    assert!(
        !s.claim_hibernation(bid, true).await.unwrap(),
        "active tasks block an unforced claim"
    );
    assert_eq!(
        s.get_workspace(bid).await.unwrap().unwrap().status,
        WorkspaceStatus::Online
    );
    assert!(
        s.claim_hibernation(bid, false).await.unwrap(),
        "force claims"
    );
    assert!(s.claim_hibernation(iid, true).await.unwrap());
    for id in [bid, iid] {
        assert_eq!(
            s.get_workspace(id).await.unwrap().unwrap().status,
            WorkspaceStatus::Hibernating
        );
        assert!(
            !s.claim_hibernation(id, false).await.unwrap(),
            "a second claim changes nothing"
        );
    }
    assert_eq!(
        b.count("structure_events").await,
        events_before,
        "the claim records no event"
    );

    // Hibernated clears the URL and records WORKSPACE_HIBERNATED; Woken provisions.
    let done = StatusChange {
        transition: Transition::Hibernated,
        payload: json!({"name": "idle", "tier": 2}),
        failure: None,
    };
    assert!(s.transition(iid, done).await.unwrap());
    let w = s.get_workspace(iid).await.unwrap().unwrap();
    assert_eq!((w.status, w.url), (WorkspaceStatus::Hibernated, None));
    let last = s.latest_events(Some(iid), 1).await.unwrap();
    assert_eq!(last[0].event_type, "WORKSPACE_HIBERNATED");
    assert_eq!(last[0].payload, json!({"name": "idle", "tier": 2}));
    assert!(
        !s.claim_hibernation(iid, false).await.unwrap(),
        "a hibernated row cannot be claimed"
    );
    assert!(
        s.transition(iid, StatusChange::new(Transition::Woken))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_workspace(iid).await.unwrap().unwrap().status,
        WorkspaceStatus::Provisioning
    );
    assert!(
        !s.claim_hibernation(WorkspaceId::new_v4(), false)
            .await
            .unwrap()
    );
}

async fn hibernation_candidates_follow_activity_not_heartbeats(b: Backend) {
    let s = b.store();
    let minutes = |m: Option<i64>| WorkspacePatch {
        hibernation_idle_minutes: Some(m),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for (name, runtime) in [
        ("sleepy", "claude-code"),
        ("no-window", "claude-code"),
        ("ext", "kimi"),
        ("working", "claude-code"),
        ("booting", "claude-code"),
    ] {
        let mut n = new_ws(name);
        n.runtime = runtime.into();
        ids.push(n.id);
        s.create_workspace(n).await.unwrap();
    }
    let [sleepy, no_window, ext, working, booting] = ids[..] else {
        unreachable!()
    };
    for id in [sleepy, no_window, ext, working] {
        assert!(
            s.transition(id, StatusChange::new(Transition::AgentRegistered))
                .await
                .unwrap()
        );
        s.heartbeat(id, idle_hb()).await.unwrap();
    }
    s.heartbeat(working, hb(0.0, "", "")).await.unwrap(); // one active task
    for id in [sleepy, ext, working, booting] {
        s.update_workspace(id, minutes(Some(30))).await.unwrap();
    }
    s.update_workspace(no_window, minutes(None)).await.unwrap();

    let candidates = s.hibernation_candidates().await.unwrap();
    assert_eq!(
        candidates.iter().map(|c| c.id).collect::<Vec<_>>(),
        [sleepy],
        "only the online, idle, container workspace with a window"
    );
    let c = &candidates[0];
    assert_eq!(c.idle_minutes, 30);
    let newest_event = s.latest_events(Some(sleepy), 1).await.unwrap()[0].created_at;
    assert_eq!(c.last_active_at, newest_event);

    // A heartbeat that changes nothing is not activity (REFERENCE.md §12 #30)…
    s.heartbeat(sleepy, idle_hb()).await.unwrap();
    assert_eq!(
        s.hibernation_candidates().await.unwrap()[0].last_active_at,
        newest_event
    );
    // …a task change is.
    s.heartbeat(
        sleepy,
        Heartbeat {
            active_tasks: 0,
            ..hb(0.0, "", "summarising")
        },
    )
    .await
    .unwrap();
    let after = s.hibernation_candidates().await.unwrap();
    let task_event = s.latest_events(Some(sleepy), 1).await.unwrap()[0].clone();
    assert_eq!(task_event.event_type, "TASK_UPDATED");
    assert_eq!(after[0].last_active_at, task_event.created_at);
    assert!(after[0].last_active_at >= newest_event);
}

/// Secrets (workspace and global), the re-encryption pass, and the event log's reads and
/// retention.
mod secrets_and_events {
    use berth_domain::status::Transition;
    use berth_store::{
        CipherError, Error, EventFilter, KeyRing, NewIdempotency, SecretScope, StatusChange,
        WorkspaceStore,
    };
    use secrecy::{ExposeSecret, SecretString};
    use serde_json::json;

    use super::new_ws;
    use crate::harness::{Backend, both, secret};

    both!(
        workspace_secrets_upsert_list_delete_with_audit_events,
        global_secrets_and_their_dependents,
        reencrypt_moves_every_sealed_value_to_the_active_key,
        reencrypt_interrupted_halfway_resumes_without_loss,
        reencrypt_fault_inside_a_batch_loses_nothing,
        values_under_an_unknown_key_are_reported_by_key_id,
        latest_events_last_seq_and_retention,
    );

    fn ring(lines: &[&SecretString]) -> KeyRing {
        let text: Vec<&str> = lines.iter().map(|l| l.expose_secret()).collect();
        KeyRing::parse(&SecretString::from(text.join("\n"))).expect("key ring")
    }

    /// The same database under another key ring.
    fn rekeyed(b: &Backend, keys: KeyRing) -> Box<dyn WorkspaceStore> {
        match b {
            Backend::Sqlite(s, _) => Box::new(s.with_key_ring(keys)),
            Backend::Postgres(s) => Box::new(s.with_key_ring(keys)),
        }
    }

    /// Every key id a sealed value is stored under, across the four sealed columns, sorted.
    async fn stored_key_ids(b: &Backend) -> Vec<String> {
        let sql = "SELECT key_id FROM workspace_secrets UNION ALL SELECT key_id FROM global_secrets \
                   UNION ALL SELECT key_id FROM idempotency_keys UNION ALL \
                   SELECT inbound_secret_key_id FROM workspaces WHERE inbound_secret IS NOT NULL";
        let mut ids: Vec<String> = match b {
            Backend::Sqlite(s, _) => sqlx::query_scalar(sql).fetch_all(s.pool()).await,
            Backend::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await,
        }
        .expect("key ids");
        ids.sort();
        ids
    }

    fn opened(list: Vec<berth_store::OpenedSecret>) -> Vec<(String, String)> {
        list.into_iter()
            .map(|s| {
                let v = s.value.expect("opens");
                (s.key, v.expose_secret().to_owned())
            })
            .collect()
    }

    async fn workspace_secrets_upsert_list_delete_with_audit_events(b: Backend) {
        let s = b.store();
        let n = new_ws("holder");
        let id = n.id;
        s.create_workspace(n).await.unwrap();
        let scope = SecretScope::Workspace(id);
        s.set_secret(
            scope,
            "API_KEY".into(),
            secret("sk-first-value"),
            json!({"key": "API_KEY", "n": 1}),
        )
        .await
        .unwrap();
        s.set_secret(
            scope,
            "API_KEY".into(),
            secret("sk-second-value"),
            json!({"key": "API_KEY", "n": 2}),
        )
        .await
        .unwrap();
        s.set_secret(
            scope,
            "A_FIRST".into(),
            secret("a"),
            json!({"key": "A_FIRST"}),
        )
        .await
        .unwrap();
        let list = s.list_secrets(scope).await.unwrap();
        let keys: Vec<&str> = list.iter().map(|i| i.key.as_str()).collect();
        // Byte order, whatever the database's collation.
        assert_eq!(keys, vec!["API_KEY", "A_FIRST"]);
        assert!(list.iter().all(|i| i.key_id == "test"));
        let api = &list[0];
        assert!(api.updated_at >= api.created_at);
        assert_eq!(
            opened(s.open_secrets(scope).await.unwrap()),
            vec![
                ("API_KEY".to_owned(), "sk-second-value".to_owned()),
                ("A_FIRST".to_owned(), "a".to_owned())
            ]
        );
        // Sealed at rest: no blob contains a value.
        for blob in b.raw_secret_blobs().await {
            assert!(!blob.windows(6).any(|w| w == b"sk-sec"));
        }
        // The global scope is separate.
        assert!(
            s.list_secrets(SecretScope::Global)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.delete_secret(scope, "API_KEY".into(), json!({"key": "API_KEY"}))
                .await
                .unwrap()
        );
        assert!(
            !s.delete_secret(scope, "API_KEY".into(), json!({"key": "API_KEY"}))
                .await
                .unwrap()
        );
        assert_eq!(s.list_secrets(scope).await.unwrap().len(), 1);
        // The audit trail: exactly the payloads given, in the workspace's log.
        let audit: Vec<(String, serde_json::Value)> = s
            .events(EventFilter {
                workspace_id: Some(id),
                ..EventFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type.starts_with("secret."))
            .map(|e| (e.event_type, e.payload))
            .collect();
        assert_eq!(
            audit,
            vec![
                ("secret.set".to_owned(), json!({"key": "API_KEY", "n": 1})),
                ("secret.set".to_owned(), json!({"key": "API_KEY", "n": 2})),
                ("secret.set".to_owned(), json!({"key": "A_FIRST"})),
                ("secret.delete".to_owned(), json!({"key": "API_KEY"})),
            ]
        );
        // Missing and removed workspaces take no secrets (and record nothing).
        let before = b.count("structure_events").await;
        let missing = SecretScope::Workspace(berth_domain::WorkspaceId::new_v4());
        assert!(matches!(
            s.set_secret(missing, "K".into(), secret("v"), json!({}))
                .await,
            Err(Error::NotFound)
        ));
        s.remove_workspaces(id, vec![]).await.unwrap();
        let after_remove = b.count("structure_events").await;
        assert_eq!(after_remove, before + 1);
        assert!(matches!(
            s.set_secret(scope, "K".into(), secret("v"), json!({}))
                .await,
            Err(Error::NotFound)
        ));
        assert_eq!(b.count("structure_events").await, after_remove);
    }

    async fn global_secrets_and_their_dependents(b: Backend) {
        let s = b.store();
        s.set_secret(
            SecretScope::Global,
            "SHARED".into(),
            secret("g-value"),
            json!({"key": "SHARED"}),
        )
        .await
        .unwrap();
        s.set_secret(
            SecretScope::Global,
            "SHARED".into(),
            secret("g-value-2"),
            json!({"key": "SHARED"}),
        )
        .await
        .unwrap();
        assert_eq!(
            opened(s.open_secrets(SecretScope::Global).await.unwrap()),
            vec![("SHARED".to_owned(), "g-value-2".to_owned())]
        );
        let global_events: Vec<_> = s
            .events(EventFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "secret.set")
            .collect();
        assert_eq!(global_events.len(), 2);
        assert!(global_events.iter().all(|e| e.workspace_id.is_none()));

        let plain = new_ws("plain");
        let plain_id = plain.id;
        s.create_workspace(plain).await.unwrap();
        let mut overriding = new_ws("overriding");
        overriding.secrets = vec![("SHARED".into(), secret("own"))];
        s.create_workspace(overriding).await.unwrap();
        let paused = new_ws("paused");
        let paused_id = paused.id;
        s.create_workspace(paused).await.unwrap();
        s.transition(paused_id, StatusChange::new(Transition::Paused))
            .await
            .unwrap();
        let mut external = new_ws("external");
        external.runtime = "kimi".into();
        s.create_workspace(external).await.unwrap();
        let removed = new_ws("removed");
        let removed_id = removed.id;
        s.create_workspace(removed).await.unwrap();
        s.remove_workspaces(removed_id, vec![]).await.unwrap();
        assert_eq!(
            s.global_secret_dependents("SHARED".into()).await.unwrap(),
            vec![plain_id]
        );
        assert!(
            s.delete_secret(
                SecretScope::Global,
                "SHARED".into(),
                json!({"key": "SHARED"})
            )
            .await
            .unwrap()
        );
        assert!(
            s.open_secrets(SecretScope::Global)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Writes one value into each of the four sealed columns with `store`; returns the workspace.
    async fn write_everything(store: &dyn WorkspaceStore) -> berth_domain::WorkspaceId {
        let mut n = new_ws("sealed");
        n.secrets = vec![("A".into(), secret("alpha")), ("B".into(), secret("beta"))];
        n.idempotency = Some(NewIdempotency {
            key: "idem-rotate".into(),
            request_hash: [9; 32],
            status: 201,
            body: secret(r#"{"auth_token":"tok"}"#),
        });
        let id = n.id;
        store.create_workspace(n).await.unwrap();
        store
            .set_secret(SecretScope::Global, "G".into(), secret("gamma"), json!({}))
            .await
            .unwrap();
        store
            .set_inbound_secret(id, secret("inbound-secret"))
            .await
            .unwrap();
        id
    }

    async fn assert_everything_readable(store: &dyn WorkspaceStore, id: berth_domain::WorkspaceId) {
        let ws: Vec<(String, String)> = store
            .workspace_secrets(id)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.expose_secret().to_owned()))
            .collect();
        assert_eq!(
            ws,
            vec![("A".into(), "alpha".into()), ("B".into(), "beta".into())]
        );
        assert_eq!(
            opened(store.open_secrets(SecretScope::Global).await.unwrap()),
            vec![("G".to_owned(), "gamma".to_owned())]
        );
        let idem = store
            .idempotent_create("idem-rotate")
            .await
            .unwrap()
            .expect("record");
        assert_eq!(idem.body.expose_secret(), r#"{"auth_token":"tok"}"#);
        assert_eq!(
            store
                .inbound_secret(id)
                .await
                .unwrap()
                .expect("inbound")
                .expose_secret(),
            "inbound-secret"
        );
    }

    async fn reencrypt_moves_every_sealed_value_to_the_active_key(b: Backend) {
        let (k1, k2) = (KeyRing::generate_line("k1"), KeyRing::generate_line("k2"));
        let id = write_everything(rekeyed(&b, ring(&[&k1])).as_ref()).await;
        assert_eq!(stored_key_ids(&b).await, vec!["k1"; 5]);
        let both = rekeyed(&b, ring(&[&k2, &k1]));
        let report = both.reencrypt(2, None).await.unwrap();
        assert_eq!(report.active_key_id, "k2");
        assert_eq!(report.rows, 5);
        assert!(report.remaining_by_key_id.is_empty(), "{report:?}");
        assert_eq!(stored_key_ids(&b).await, vec!["k2"; 5]);
        // Nothing left to do.
        assert_eq!(both.reencrypt(2, None).await.unwrap().rows, 0);
        // Readable with the new key alone; the old key alone opens nothing.
        assert_everything_readable(rekeyed(&b, ring(&[&k2])).as_ref(), id).await;
        let old_only = rekeyed(&b, ring(&[&k1]));
        assert!(matches!(
            old_only.workspace_secrets(id).await,
            Err(Error::Cipher(CipherError::UnknownKey(k))) if k == "k2"
        ));
    }

    async fn reencrypt_interrupted_halfway_resumes_without_loss(b: Backend) {
        let (k1, k2) = (KeyRing::generate_line("k1"), KeyRing::generate_line("k2"));
        let id = write_everything(rekeyed(&b, ring(&[&k1])).as_ref()).await;
        let both = rekeyed(&b, ring(&[&k2, &k1]));
        // Stopped after two batches of one row.
        let first = both.reencrypt(1, Some(2)).await.unwrap();
        assert_eq!(first.rows, 2);
        assert_eq!(first.remaining_by_key_id.get("k1"), Some(&3));
        let mut ids = stored_key_ids(&b).await;
        ids.dedup();
        assert_eq!(ids, vec!["k1", "k2"]);
        // Meanwhile everything stays readable, and a write during the rotation uses the new key.
        assert_everything_readable(both.as_ref(), id).await;
        both.set_secret(
            SecretScope::Workspace(id),
            "C".into(),
            secret("gamma-c"),
            json!({}),
        )
        .await
        .unwrap();
        // The re-run continues where the first stopped.
        let second = both.reencrypt(1, None).await.unwrap();
        assert_eq!(second.rows, 3);
        assert!(second.remaining_by_key_id.is_empty());
        assert_eq!(stored_key_ids(&b).await, vec!["k2"; 6]);
        let new_only = rekeyed(&b, ring(&[&k2]));
        assert!(
            new_only
                .delete_secret(SecretScope::Workspace(id), "C".into(), json!({}))
                .await
                .unwrap()
        );
        assert_everything_readable(new_only.as_ref(), id).await;
    }

    async fn reencrypt_fault_inside_a_batch_loses_nothing(b: Backend) {
        let (k1, k2) = (KeyRing::generate_line("k1"), KeyRing::generate_line("k2"));
        let id = write_everything(rekeyed(&b, ring(&[&k1])).as_ref()).await;
        if b.is_postgres() {
            b.exec(
                "CREATE FUNCTION fail_rotate() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER fail_rotate BEFORE UPDATE ON global_secrets \
                 FOR EACH ROW EXECUTE FUNCTION fail_rotate();",
            )
            .await;
        } else {
            b.exec(
                "CREATE TRIGGER fail_rotate BEFORE UPDATE ON global_secrets \
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            )
            .await;
        }
        let both = rekeyed(&b, ring(&[&k2, &k1]));
        assert!(matches!(
            both.reencrypt(10, None).await,
            Err(Error::Backend(_))
        ));
        // The workspace-secrets batch committed before the fault; the failed batch rolled back.
        let mut ids = stored_key_ids(&b).await;
        ids.dedup();
        assert_eq!(ids, vec!["k1", "k2"]);
        assert_everything_readable(both.as_ref(), id).await;
        if b.is_postgres() {
            b.exec("DROP TRIGGER fail_rotate ON global_secrets").await;
        } else {
            b.exec("DROP TRIGGER fail_rotate").await;
        }
        let report = both.reencrypt(10, None).await.unwrap();
        assert_eq!(report.rows, 3);
        assert!(report.remaining_by_key_id.is_empty());
        assert_everything_readable(rekeyed(&b, ring(&[&k2])).as_ref(), id).await;
    }

    async fn values_under_an_unknown_key_are_reported_by_key_id(b: Backend) {
        let (old, new) = (KeyRing::generate_line("old"), KeyRing::generate_line("new"));
        let id = write_everything(rekeyed(&b, ring(&[&old])).as_ref()).await;
        let stranger = rekeyed(&b, ring(&[&new]));
        let ws = stranger
            .open_secrets(SecretScope::Workspace(id))
            .await
            .unwrap();
        assert_eq!(ws.len(), 2);
        for s in &ws {
            assert_eq!(s.key_id, "old");
            assert!(matches!(&s.value, Err(CipherError::UnknownKey(k)) if k == "old"));
        }
        assert!(matches!(
            stranger.inbound_secret(id).await,
            Err(Error::Cipher(CipherError::UnknownKey(k))) if k == "old"
        ));
        // A pass with a ring that lacks the key re-seals nothing and reports what is left.
        let report = stranger.reencrypt(10, None).await.unwrap();
        assert_eq!(report.rows, 0);
        assert_eq!(report.remaining_by_key_id.get("old"), Some(&5));
        assert_eq!(stored_key_ids(&b).await, vec!["old"; 5]);
    }

    async fn latest_events_last_seq_and_retention(b: Backend) {
        let s = b.store();
        assert_eq!(s.last_event_seq().await.unwrap(), None);
        let one = new_ws("one");
        let one_id = one.id;
        s.create_workspace(one).await.unwrap();
        let two = new_ws("two");
        let two_id = two.id;
        s.create_workspace(two).await.unwrap();
        s.set_secret(
            SecretScope::Workspace(one_id),
            "K".into(),
            secret("v"),
            json!({"key": "K"}),
        )
        .await
        .unwrap();
        let all = s.events(EventFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        let last = all.last().unwrap().seq;
        assert_eq!(s.last_event_seq().await.unwrap(), Some(last));
        let newest: Vec<i64> = s
            .latest_events(None, 2)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(newest, vec![all[2].seq, all[1].seq]);
        let of_one = s.latest_events(Some(one_id), 100).await.unwrap();
        assert_eq!(
            of_one
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
            vec!["secret.set", "WORKSPACE_PROVISIONING"]
        );
        assert!(of_one.iter().all(|e| e.workspace_id == Some(one_id)));
        assert_eq!(s.latest_events(Some(two_id), 100).await.unwrap().len(), 1);
        // Retention: nothing is older than an hour ago; everything is older than the future.
        let hour = chrono::Duration::hours(1);
        assert_eq!(s.prune_events(berth_store::now() - hour).await.unwrap(), 0);
        assert_eq!(s.prune_events(berth_store::now() + hour).await.unwrap(), 3);
        assert!(s.events(EventFilter::default()).await.unwrap().is_empty());
        // Sequence ids are never reused after a prune.
        s.set_secret(
            SecretScope::Workspace(one_id),
            "K".into(),
            secret("w"),
            json!({}),
        )
        .await
        .unwrap();
        assert!(s.last_event_seq().await.unwrap().unwrap() > last);
    }
}
