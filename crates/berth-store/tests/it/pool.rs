//! Warm-pool members: a create claims a ready member of its shape in its own transaction and
//! takes the member's id; concurrent creates never take the same member.

use berth_domain::WorkspaceId;
use berth_store::{
    Error, NewIdempotency, NewPoolMember, NewWorkspace, PoolMemberState, WorkspaceStore,
};
use secrecy::ExposeSecret;

use crate::harness::{Backend, both, fresh_pg_database, new_workspace, secret, test_keys};

/// Adds a member of `shape` and, when `url` is given, marks it ready there.
async fn member(s: &dyn WorkspaceStore, shape: &str, url: Option<&str>) -> WorkspaceId {
    let id = WorkspaceId::new_v4();
    s.add_pool_member(NewPoolMember {
        id,
        pool: "echo".into(),
        shape: shape.into(),
        secret: secret(&format!("pool-secret-{id}")),
    })
    .await
    .unwrap();
    if let Some(url) = url {
        assert!(
            s.pool_member_ready(id, url.to_owned(), Some("pid-1".into()))
                .await
                .unwrap()
        );
    }
    id
}

fn claiming(name: &str, shape: &str) -> NewWorkspace {
    NewWorkspace {
        claim: Some(shape.to_owned()),
        secrets: vec![("API_KEY".into(), secret("value-1"))],
        ..new_workspace(name)
    }
}

async fn state_of(s: &dyn WorkspaceStore, id: WorkspaceId) -> Option<PoolMemberState> {
    s.pool_members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
}

async fn a_create_takes_the_oldest_ready_member_of_its_shape_and_its_id(b: Backend) {
    let s = b.store();
    let starting = member(s, "shape-a", None).await;
    let other_shape = member(s, "shape-b", Some("http://127.0.0.1:9002")).await;
    let oldest = member(s, "shape-a", Some("http://127.0.0.1:9003")).await;
    let newer = member(s, "shape-a", Some("http://127.0.0.1:9004")).await;

    let mut new = claiming("first", "shape-a");
    let placeholder = new.id;
    new.idempotency = Some(NewIdempotency {
        key: "k-1".into(),
        request_hash: [7; 32],
        status: 201,
        body: secret(&format!(
            r#"{{"id":"{placeholder}","status":"provisioning"}}"#
        )),
    });
    let claimed = s.create_workspace(new).await.unwrap().expect("a member");
    assert_eq!(claimed.id, oldest);
    assert_eq!(claimed.url, "http://127.0.0.1:9003");
    assert_eq!(claimed.instance_id.as_deref(), Some("pid-1"));
    assert_eq!(
        claimed.secret.as_ref().expect("opened").expose_secret(),
        format!("pool-secret-{oldest}")
    );

    // The row is the member's: its id, its URL as the provisioner's, its secrets sealed for it.
    assert!(s.get_workspace(placeholder).await.unwrap().is_none());
    let row = s.get_workspace(oldest).await.unwrap().expect("row");
    assert_eq!(row.name, "first");
    assert_eq!(row.url.as_deref(), Some("http://127.0.0.1:9003"));
    assert!(row.url_from_provisioner);
    let secrets = s.workspace_secrets(oldest).await.unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].1.expose_secret(), "value-1");
    // The stored idempotent answer names the id the client got.
    let replay = s.idempotent_create("k-1").await.unwrap().expect("replay");
    assert_eq!(replay.workspace_id, oldest);
    let body: serde_json::Value = serde_json::from_str(replay.body.expose_secret()).unwrap();
    assert_eq!(body["id"], oldest.to_string());
    assert_eq!(body["status"], "provisioning");

    assert_eq!(state_of(s, oldest).await, Some(PoolMemberState::Claimed));
    assert_eq!(state_of(s, newer).await, Some(PoolMemberState::Ready));
    assert_eq!(state_of(s, starting).await, Some(PoolMemberState::Starting));
    assert_eq!(state_of(s, other_shape).await, Some(PoolMemberState::Ready));

    // The next create takes the next one; then there is none, and the create goes on cold.
    let second = s
        .create_workspace(claiming("second", "shape-a"))
        .await
        .unwrap();
    assert_eq!(second.map(|m| m.id), Some(newer));
    let cold = claiming("third", "shape-a");
    let cold_id = cold.id;
    assert!(s.create_workspace(cold).await.unwrap().is_none());
    let row = s.get_workspace(cold_id).await.unwrap().expect("cold row");
    assert_eq!(row.url, None);
    // Without a claim nothing is taken.
    assert!(
        s.create_workspace(new_workspace("plain"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(state_of(s, other_shape).await, Some(PoolMemberState::Ready));
}

async fn a_refused_create_leaves_its_member_ready(b: Backend) {
    let s = b.store();
    let ready = member(s, "shape-a", Some("http://127.0.0.1:9001")).await;
    s.create_workspace(new_workspace("taken")).await.unwrap();
    let err = s
        .create_workspace(claiming("taken", "shape-a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken), "{err}");
    assert_eq!(state_of(s, ready).await, Some(PoolMemberState::Ready));
    assert!(s.get_workspace(ready).await.unwrap().is_none());
}

async fn members_are_marked_ready_removed_and_pruned(b: Backend) {
    let s = b.store();
    let a = member(s, "shape-a", None).await;
    let listed = s.pool_members().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, PoolMemberState::Starting);
    assert_eq!(listed[0].pool, "echo");
    assert!(listed[0].url.is_none() && listed[0].ready_at.is_none());
    // Removed while starting: the late "ready" finds nothing.
    assert!(s.remove_pool_member(a).await.unwrap());
    assert!(
        !s.pool_member_ready(a, "http://x".into(), None)
            .await
            .unwrap()
    );
    assert!(!s.remove_pool_member(a).await.unwrap());

    // A claimed member is a workspace's: never removed as a member, pruned as a record later.
    let c = member(s, "shape-a", Some("http://127.0.0.1:9001")).await;
    s.create_workspace(claiming("w", "shape-a")).await.unwrap();
    assert!(!s.remove_pool_member(c).await.unwrap());
    let claimed_at = s.pool_members().await.unwrap()[0]
        .claimed_at
        .expect("claimed at");
    assert_eq!(
        s.prune_claimed_pool_members(claimed_at).await.unwrap(),
        0,
        "not older than itself"
    );
    let later = claimed_at + chrono::Duration::seconds(1);
    assert_eq!(s.prune_claimed_pool_members(later).await.unwrap(), 1);
    assert!(s.pool_members().await.unwrap().is_empty());
    assert!(s.get_workspace(c).await.unwrap().is_some());
}

/// Concurrent creates on one store: each ready member is taken once, the rest start cold.
async fn concurrent_creates_never_take_the_same_member(b: Backend) {
    let s = b.store();
    let mut ready = Vec::new();
    for port in 0..3 {
        ready.push(
            member(
                s,
                "shape-a",
                Some(&format!("http://127.0.0.1:{}", 9100 + port)),
            )
            .await,
        );
    }
    let creates = (0..10).map(|i| s.create_workspace(claiming(&format!("w{i}"), "shape-a")));
    let results = futures_util::future::join_all(creates).await;
    let mut taken: Vec<WorkspaceId> = results
        .into_iter()
        .filter_map(|r| r.unwrap().map(|m| m.id))
        .collect();
    taken.sort();
    ready.sort();
    assert_eq!(taken, ready);
}

both!(
    a_create_takes_the_oldest_ready_member_of_its_shape_and_its_id,
    a_refused_create_leaves_its_member_ready,
    members_are_marked_ready_removed_and_pruned,
    concurrent_creates_never_take_the_same_member,
);

/// Two servers on one PostgreSQL (two stores, two pools of connections) race for the last
/// member, many times: exactly one of each pair gets it.
#[tokio::test]
async fn two_servers_on_one_postgres_race_for_the_last_member() {
    let url = fresh_pg_database().await;
    let keys = test_keys();
    let one = berth_store::PgStore::connect(&url, keys.clone())
        .await
        .unwrap();
    let two = berth_store::PgStore::connect(&url, keys).await.unwrap();
    for round in 0..20 {
        let last = member(&one, "shape-a", Some("http://127.0.0.1:9001")).await;
        let (a, b) = tokio::join!(
            one.create_workspace(claiming(&format!("a{round}"), "shape-a")),
            two.create_workspace(claiming(&format!("b{round}"), "shape-a")),
        );
        let winners: Vec<WorkspaceId> = [a.unwrap(), b.unwrap()]
            .into_iter()
            .flatten()
            .map(|m| m.id)
            .collect();
        assert_eq!(winners, vec![last], "round {round}");
    }
}
