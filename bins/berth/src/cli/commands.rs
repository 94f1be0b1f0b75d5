//! The client commands: each calls `berth-client` and prints the answer as a table or as JSON.

use std::io::Read as _;
use std::time::Duration;

use berth_client::berth_api::events::Event;
use berth_client::berth_api::templates::TemplateListing;
use berth_client::berth_api::workspaces::{CreateWorkspace, UpdateWorkspace, Workspace};
use berth_client::{DeleteOptions, StreamEvent, reply_text};
use berth_domain::WorkspaceId;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::cli::args::{
    CreateArgs, EventsArgs, ExecArgs, FilesCommand, Output, SecretScopeArgs, TokensCommand,
    UpdateArgs, WaitArgs, WorkspaceCommand,
};
use crate::cli::table::{Table, fields, truncate};
use crate::cli::{Ctx, Failure, Outcome, out, progress, resolve};

/// Prints `value` as pretty JSON on stdout.
fn json(value: &impl Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Usage(format!("cannot print the answer as JSON: {e}")))?;
    out(&format!("{text}\n"));
    Ok(())
}

/// Prints `value` as JSON, or `table()` as text.
fn print<T: Serialize>(ctx: &Ctx, value: &T, table: impl FnOnce(&T) -> String) -> Outcome {
    match ctx.output {
        Output::Json => json(value),
        Output::Table => {
            out(&table(value));
            Ok(())
        }
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

// ---- workspaces ---------------------------------------------------------------------------

/// `berth workspace …`.
pub async fn workspace(ctx: Ctx, command: WorkspaceCommand) -> Outcome {
    match command {
        WorkspaceCommand::Create(args) => create(&ctx, args).await,
        WorkspaceCommand::List { page_size } => list(&ctx, page_size).await,
        WorkspaceCommand::Get { workspace } => {
            let id = resolve(&ctx, &workspace).await?;
            let ws = ctx.client.workspace(id).await?;
            print(&ctx, &ws, workspace_fields)
        }
        WorkspaceCommand::Update(args) => update(&ctx, args).await,
        WorkspaceCommand::Delete {
            workspace,
            confirm,
            purge,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx
                .client
                .delete_workspace(id, DeleteOptions { confirm, purge })
                .await?;
            print(&ctx, &done, |d| {
                let also = match d.cascade_deleted {
                    0 => String::new(),
                    n => format!(" with {n} sub-workspace{}", if n == 1 { "" } else { "s" }),
                };
                format!("{id} {}{also}\n", d.status)
            })
        }
        WorkspaceCommand::Restart {
            workspace,
            template,
            wait,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            if wait.wait {
                // The restart answers before the row changes: subscribe, restart, then wait for
                // the new start (see berth_client::Client::restart_and_wait).
                let ws =
                    progress::restart_and_wait(&ctx.client, id, template.as_deref(), &wait).await?;
                return print(&ctx, &ws, workspace_fields);
            }
            let done = ctx
                .client
                .restart_workspace(id, template.as_deref())
                .await?;
            print(&ctx, &done, |d| match &d.message {
                Some(m) => format!("{id} {}: {m}\n", d.status),
                None => format!("{id} {}\n", d.status),
            })
        }
        WorkspaceCommand::Pause { workspace } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx.client.pause_workspace(id).await?;
            print(&ctx, &done, |d| {
                format!("{id} {} ({} paused)\n", d.status, d.paused_count)
            })
        }
        WorkspaceCommand::Resume { workspace, wait } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx.client.resume_workspace(id).await?;
            if wait.wait {
                return wait_and_print(&ctx, id, &wait).await;
            }
            print(&ctx, &done, |d| {
                format!("{id} {} ({} resumed)\n", d.status, d.resumed_count)
            })
        }
        WorkspaceCommand::Hibernate { workspace, force } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx.client.hibernate_workspace(id, force).await?;
            print(&ctx, &done, |d| format!("{id} {}\n", d.status))
        }
        WorkspaceCommand::Wake { workspace, wait } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx.client.wake_workspace(id).await?;
            if wait.wait {
                return wait_and_print(&ctx, id, &wait).await;
            }
            print(&ctx, &done, |d| format!("{id} {}\n", d.status))
        }
    }
}

/// Follows `id` to `online` and prints it (or fails with its failure code).
async fn wait_and_print(ctx: &Ctx, id: WorkspaceId, wait: &WaitArgs) -> Outcome {
    let ws = progress::wait_online(&ctx.client, id, Duration::from_secs(wait.timeout)).await?;
    print(ctx, &ws, workspace_fields)
}

async fn create(ctx: &Ctx, args: CreateArgs) -> Outcome {
    let mut secrets = std::collections::BTreeMap::new();
    for pair in &args.secrets {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Failure::Usage(format!(
                "--secret {pair:?} is not KEY=VALUE"
            )));
        };
        secrets.insert(k.to_owned(), v.to_owned());
    }
    let req = CreateWorkspace {
        name: args.name,
        role: args.role.unwrap_or_default(),
        template: args.template.unwrap_or_default(),
        tier: args.tier.unwrap_or_default(),
        model: args.model.unwrap_or_default(),
        runtime: args.runtime.unwrap_or_default(),
        external: args.external,
        parent_id: args.parent,
        secrets,
        ..Default::default()
    };
    let created = match &args.idempotency_key {
        Some(key) => {
            let done = ctx.client.create_workspace_with_key(&req, key).await?;
            if done.replayed {
                eprintln!("(replayed: a create with this idempotency key was already made)");
            }
            done.workspace
        }
        None => ctx.client.create_workspace(&req).await?,
    };
    if args.wait.wait {
        if ctx.output == Output::Table {
            eprintln!("created {} ({})", created.id, created.status.as_str());
        }
        if let Some(c) = &created.connection {
            // The token is shown once: never swallow it, even while waiting.
            eprintln!("auth token (shown once): {}", c.auth_token);
        }
        return wait_and_print(ctx, created.id, &args.wait).await;
    }
    print(ctx, &created, |c| {
        let mut pairs = vec![
            ("id", c.id.to_string()),
            ("status", c.status.as_str().to_owned()),
        ];
        if let Some(conn) = &c.connection {
            pairs.push(("auth_token", format!("{} (shown once)", conn.auth_token)));
            pairs.push(("register", conn.registry_endpoint.clone()));
            pairs.push(("heartbeat", conn.heartbeat_endpoint.clone()));
        }
        fields(&pairs)
    })
}

async fn list(ctx: &Ctx, page_size: u32) -> Outcome {
    let mut all = Vec::new();
    let mut pages = std::pin::pin!(ctx.client.workspaces(page_size));
    while let Some(ws) = pages.next().await {
        all.push(ws?);
    }
    print(ctx, &all, |all| {
        if all.is_empty() {
            return "no workspaces (create one: berth workspace create NAME --template echo)\n"
                .to_owned();
        }
        let mut t = Table::new(&["ID", "NAME", "STATUS", "RUNTIME", "TIER", "URL"]);
        for w in all {
            let status = match w.failure_code.as_deref() {
                Some(code) => format!("{} ({code})", w.status.as_str()),
                None => w.status.as_str().to_owned(),
            };
            t.row([
                w.id.to_string(),
                truncate(&w.name, 32),
                status,
                w.runtime.to_string(),
                w.tier.to_string(),
                w.url.to_string(),
            ]);
        }
        t.render()
    })
}

/// One workspace as `key: value` lines.
fn workspace_fields(w: &Workspace<'static>) -> String {
    let agent = w
        .agent_card
        .as_ref()
        .and_then(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .unwrap_or_default();
    fields(&[
        ("id", w.id.to_string()),
        ("name", w.name.to_string()),
        ("role", w.role.as_deref().unwrap_or_default().to_owned()),
        ("status", w.status.as_str().to_owned()),
        (
            "failure_code",
            w.failure_code.as_deref().unwrap_or_default().to_owned(),
        ),
        ("runtime", w.runtime.to_string()),
        ("tier", w.tier.to_string()),
        ("url", w.url.to_string()),
        ("agent", agent),
        (
            "parent_id",
            w.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        ),
        ("active_tasks", w.active_tasks.to_string()),
        ("uptime_seconds", w.uptime_seconds.to_string()),
    ])
}

async fn update(ctx: &Ctx, args: UpdateArgs) -> Outcome {
    let id = resolve(ctx, &args.workspace).await?;
    let patch = UpdateWorkspace {
        name: args.name,
        role: args.role,
        tier: args.tier,
        runtime: args.runtime,
        parent_id: args
            .parent
            .map(|p| (!p.eq_ignore_ascii_case("none")).then_some(p)),
        ..Default::default()
    };
    if patch == UpdateWorkspace::default() {
        return Err(Failure::Usage(
            "nothing to change: pass --name, --role, --tier, --runtime or --parent".into(),
        ));
    }
    let done = ctx.client.update_workspace(id, &patch).await?;
    print(ctx, &done, |d| {
        if d.needs_restart == Some(true) {
            format!(
                "{id} {} (restart it to apply: berth workspace restart {id})\n",
                d.status
            )
        } else {
            format!("{id} {}\n", d.status)
        }
    })
}

// ---- events -------------------------------------------------------------------------------

/// `berth events`.
pub async fn events(ctx: Ctx, args: EventsArgs) -> Outcome {
    let workspace = match &args.workspace {
        Some(w) => Some(resolve(&ctx, w).await?),
        None => None,
    };
    let mut latest = ctx
        .client
        .event_log(workspace, None, Some(args.limit))
        .await?;
    // The log answers newest first; people read oldest first, the newest at the bottom.
    latest.reverse();
    let last_seq = latest.last().map(|e| e.seq);
    if ctx.output == Output::Json && !args.follow {
        return json(&latest);
    }
    for e in &latest {
        print_event(&ctx, e)?;
    }
    if !args.follow {
        if latest.is_empty() && ctx.output == Output::Table {
            eprintln!("no events");
        }
        return Ok(());
    }
    match workspace {
        Some(id) => {
            // The workspace's SSE stream, resumed after the last event printed.
            let mut stream = std::pin::pin!(ctx.client.events_after(id, last_seq.or(Some(0))));
            while let Some(e) = stream.next().await {
                let StreamEvent { seq, event } = e?;
                let created_at =
                    DateTime::from_timestamp_millis(event.timestamp).unwrap_or_default();
                if ctx.output == Output::Json {
                    // The log's shape, less the event's own id, which the stream does not carry.
                    let line = serde_json::json!({
                        "seq": seq,
                        "event_type": event.event_type,
                        "workspace_id": id,
                        "payload": event.data,
                        "created_at": created_at,
                    });
                    out(&format!("{line}\n"));
                    continue;
                }
                let record = Event {
                    created_at,
                    event_type: event.event_type,
                    id: uuid::Uuid::nil(),
                    payload: event.data,
                    seq,
                    workspace_id: Some(id),
                };
                print_event(&ctx, &record)?;
            }
        }
        None => {
            let mut stream = std::pin::pin!(ctx.client.follow_all_events(last_seq.or(Some(0))));
            while let Some(e) = stream.next().await {
                print_event(&ctx, &e?)?;
            }
        }
    }
    Ok(())
}

/// One event: a JSON line, or `seq  time  workspace (short id)  type  payload`.
fn print_event(ctx: &Ctx, e: &Event) -> Outcome {
    match ctx.output {
        Output::Json => {
            let line = serde_json::to_string(e)
                .map_err(|err| Failure::Usage(format!("cannot print an event: {err}")))?;
            out(&format!("{line}\n"));
        }
        Output::Table => {
            let workspace = e.workspace_id.map(|w| w.short()).unwrap_or_default();
            out(&format!(
                "{:>6}  {}  {:<12}  {:<26}  {}\n",
                e.seq,
                time(Some(e.created_at)),
                workspace,
                e.event_type,
                truncate(&e.payload.to_string(), 100)
            ));
        }
    }
    Ok(())
}

// ---- secrets ------------------------------------------------------------------------------

/// `berth secrets list`.
pub async fn secrets_list(ctx: Ctx, scope: SecretScopeArgs) -> Outcome {
    let list = match &scope.workspace {
        Some(w) => {
            let id = resolve(&ctx, w).await?;
            ctx.client.list_secrets(id).await?
        }
        None => ctx.client.list_global_secrets().await?,
    };
    print(&ctx, &list, |list| {
        if list.is_empty() {
            return "no secrets\n".to_owned();
        }
        let mut t = Table::new(&["KEY", "SCOPE", "UPDATED"]);
        for s in list {
            t.row([s.key.clone(), s.scope.clone(), time(Some(s.updated_at))]);
        }
        t.render()
    })
}

/// `berth secrets set`.
pub async fn secrets_set(ctx: Ctx, scope: SecretScopeArgs, key: String, value: String) -> Outcome {
    let value = if value == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("reading the value from standard input: {e}")))?;
        // One trailing newline (from `echo` or a file) is not part of the value.
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned()
    } else {
        value
    };
    let done = match &scope.workspace {
        Some(w) => {
            let id = resolve(&ctx, w).await?;
            ctx.client.set_secret(id, &key, &value).await?
        }
        None => ctx.client.set_global_secret(&key, &value).await?,
    };
    print(&ctx, &done, |d| {
        secret_changed(d, scope.workspace.is_some())
    })
}

/// `berth secrets delete`.
pub async fn secrets_delete(ctx: Ctx, scope: SecretScopeArgs, key: String) -> Outcome {
    let done = match &scope.workspace {
        Some(w) => {
            let id = resolve(&ctx, w).await?;
            ctx.client.delete_secret(id, &key).await?
        }
        None => ctx.client.delete_global_secret(&key).await?,
    };
    print(&ctx, &done, |d| {
        secret_changed(d, scope.workspace.is_some())
    })
}

/// `KEY saved` / `KEY deleted`; for a workspace's secret, a note that its agent restarts.
fn secret_changed(d: &berth_client::berth_api::secrets::SecretChanged, workspace: bool) -> String {
    if workspace {
        // The server restarts the workspace's agent so it gets the new environment.
        eprintln!("(the workspace's agent restarts to pick it up)");
    }
    format!("{} {}\n", d.key, d.status)
}

// ---- tokens -------------------------------------------------------------------------------

/// `berth tokens …`.
pub async fn tokens(ctx: Ctx, command: TokensCommand) -> Outcome {
    match command {
        TokensCommand::List { workspace } => {
            let id = resolve(&ctx, &workspace).await?;
            let list = ctx.client.list_tokens(id).await?;
            print(&ctx, &list, |l| {
                if l.tokens.is_empty() {
                    return "no live tokens\n".to_owned();
                }
                let mut t = Table::new(&["ID", "PREFIX", "CREATED", "LAST USED"]);
                for tok in &l.tokens {
                    t.row([
                        tok.id.to_string(),
                        format!("{}…", tok.prefix),
                        time(Some(tok.created_at)),
                        time(tok.last_used_at),
                    ]);
                }
                t.render()
            })
        }
        TokensCommand::Create { workspace } => {
            let id = resolve(&ctx, &workspace).await?;
            let minted = ctx.client.create_token(id).await?;
            print(&ctx, &minted, |m| {
                eprintln!("(save it now: it cannot be shown again)");
                format!("{}\n", m.auth_token)
            })
        }
        TokensCommand::Revoke {
            workspace,
            token_id,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let done = ctx.client.revoke_token(id, token_id).await?;
            print(&ctx, &done, |d| format!("{token_id} {}\n", d.status))
        }
    }
}

// ---- message, templates -------------------------------------------------------------------

/// `berth message WORKSPACE TEXT`.
pub async fn message(ctx: Ctx, workspace: String, text: String) -> Outcome {
    let id = resolve(&ctx, &workspace).await?;
    let reply = ctx.client.send_message(id, &text).await?;
    print(&ctx, &reply, |r| match reply_text(r) {
        Some(t) => format!("{t}\n"),
        // No text part (a file, data, an empty task): the reply as the agent sent it.
        None => format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default()),
    })
}

/// `berth files …`.
pub async fn files(ctx: Ctx, command: FilesCommand) -> Outcome {
    use berth_client::berth_api::inside::FilesQuery;
    use std::io::Write as _;
    match command {
        FilesCommand::Ls {
            workspace,
            path,
            root,
            depth,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let query = FilesQuery {
                root,
                path,
                depth: Some(depth.to_string()),
            };
            let entries = ctx.client.list_files(id, &query).await?;
            print(&ctx, &entries, |entries| {
                let mut t = Table::new(&["PATH", "SIZE", "MODIFIED"]);
                for e in entries {
                    let path = if e.dir {
                        format!("{}/", e.path)
                    } else {
                        e.path.clone()
                    };
                    let size = if e.dir {
                        String::new()
                    } else {
                        e.size.to_string()
                    };
                    t.row([path, size, e.modified.clone().unwrap_or_default()]);
                }
                t.render()
            })
        }
        FilesCommand::Cat {
            workspace,
            path,
            root,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let bytes = ctx.client.read_file(id, &path, root.as_deref()).await?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| Failure::Usage(format!("cannot write to stdout: {e}")))
        }
        FilesCommand::Put {
            workspace,
            path,
            file,
            root,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let content = match file.as_deref() {
                Some(f) if f != std::path::Path::new("-") => std::fs::read(f)
                    .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display())))?,
                _ => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
                    buf
                }
            };
            let saved = ctx
                .client
                .write_file(id, &path, root.as_deref(), content)
                .await?;
            print(&ctx, &saved, |s| {
                let restart = if s.restart_scheduled {
                    " (the workspace restarts to read it)"
                } else {
                    ""
                };
                format!("saved {}/{}{restart}\n", s.root, s.path)
            })
        }
        FilesCommand::Rm {
            workspace,
            path,
            root,
        } => {
            let id = resolve(&ctx, &workspace).await?;
            let deleted = ctx.client.delete_file(id, &path, root.as_deref()).await?;
            print(&ctx, &deleted, |s| {
                format!("deleted {}/{}\n", s.root, s.path)
            })
        }
    }
}

/// `berth exec`: the command's stdout and stderr on berth's, its exit code as berth's (124
/// when the timeout killed it, like `timeout(1)`; 1 when the server says nothing).
pub async fn exec(ctx: Ctx, args: ExecArgs) -> Outcome {
    use berth_client::berth_api::inside::ExecBody;
    use std::io::Write as _;
    let id = resolve(&ctx, &args.workspace).await?;
    let mut env = std::collections::BTreeMap::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--env wants KEY=VALUE, got {pair:?}")))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let body = ExecBody {
        cmd: args.cmd,
        cwd: args.cwd,
        env: (!env.is_empty()).then_some(env),
        timeout_secs: args.timeout,
        stdin: None,
    };
    let result = ctx.client.exec(id, &body).await?;
    if ctx.output == Output::Json {
        json(&result)?;
    } else {
        let _ = std::io::stdout().write_all(result.stdout.as_bytes());
        let _ = std::io::stderr().write_all(result.stderr.as_bytes());
        if result.truncated {
            eprintln!("berth: the output was cut at the server's limit");
        }
        if result.timed_out {
            eprintln!("berth: the command timed out and was killed");
        }
    }
    let code = match (result.timed_out, result.exit_code) {
        (true, _) => 124,
        (false, Some(c)) => u8::try_from(c).unwrap_or(1),
        (false, None) => 1,
    };
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::Exit(code))
    }
}

/// `berth templates`.
pub async fn templates(ctx: Ctx) -> Outcome {
    let list = ctx.client.templates().await?;
    print(&ctx, &list, |list| {
        let mut t = Table::new(&["ID", "NAME", "RUNTIME", "MODEL", "TIER", "DESCRIPTION"]);
        let mut broken = String::new();
        for entry in list {
            match entry {
                TemplateListing::Valid(v) => t.row([
                    v.id.clone(),
                    v.name.clone(),
                    v.runtime.clone(),
                    v.model.clone(),
                    v.tier.map(|t| t.to_string()).unwrap_or_default(),
                    truncate(&v.description, 60),
                ]),
                TemplateListing::Invalid(i) => {
                    broken.push_str(&format!("invalid template {}: {}\n", i.id, i.error));
                }
            }
        }
        t.render() + &broken
    })
}
